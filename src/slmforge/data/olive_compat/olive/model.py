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


# Olive 0.4/0.5's names for the same handlers.
class OliveModel(_NotProvided):
    pass


class PyTorchModel(OliveModel):
    pass


class ONNXModel(OliveModel):
    pass
