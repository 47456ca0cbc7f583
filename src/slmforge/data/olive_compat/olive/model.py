"""Olive's model handler names, for the annotations of published scripts; slmforge never makes one."""


class _NotProvided:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"olive.model.{type(self).__name__} is not provided by slmforge's stand-in for "
                                  "Olive (its data functions never receive an Olive model)")


class OliveModelHandler(_NotProvided):
    pass


class PyTorchModelHandler(OliveModelHandler):
    pass


class ONNXModelHandler(OliveModelHandler):
    pass


class ModelConfig(_NotProvided):
    pass
