"""The offline Azure ML workspace: a loopback HTTPS fake of the AML REST API plus Azurite.

`slmforge emulator start` runs `daemon.py` in the background; `client.ml_client(workspace_file)`
gives a configured `MLClient` for it. Nothing here listens anywhere but 127.0.0.1.
"""
