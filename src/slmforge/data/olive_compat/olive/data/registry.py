"""Olive's data component registry (olive/data/registry.py, 0.4 to 0.9): the same decorators, names kept
in lower case as Olive keeps them, so a user script registers its functions unchanged."""

from enum import Enum

LOAD_DATASET, PRE_PROCESS_DATA, POST_PROCESS_DATA, DATALOADER = (
    "load_dataset", "pre_process_data", "post_process_data", "dataloader")
KINDS = (LOAD_DATASET, PRE_PROCESS_DATA, POST_PROCESS_DATA, DATALOADER)
_DEFAULTS = {LOAD_DATASET: "default_load_dataset", PRE_PROCESS_DATA: "default_pre_process_data",
             POST_PROCESS_DATA: "default_post_process_data", DATALOADER: "default_dataloader"}


class Registry:
    """Registered functions by component kind and lower-case name."""

    _REGISTRY = {kind: {} for kind in KINDS}

    @classmethod
    def register(cls, sub_type, name=None):
        kind = sub_type.value if isinstance(sub_type, Enum) else sub_type
        if kind not in cls._REGISTRY:
            raise ValueError(f"Registry.register: '{kind}' is not a data component kind slmforge runs "
                             f"(one of {', '.join(KINDS)})")

        def decorator(component):
            cls._REGISTRY[kind][(name if name is not None else component.__name__).lower()] = component
            return component

        return decorator

    @classmethod
    def register_dataset(cls, name=None):
        return cls.register(LOAD_DATASET, name)

    @classmethod
    def register_pre_process(cls, name=None):
        return cls.register(PRE_PROCESS_DATA, name)

    @classmethod
    def register_post_process(cls, name=None):
        return cls.register(POST_PROCESS_DATA, name)

    @classmethod
    def register_dataloader(cls, name=None):
        return cls.register(DATALOADER, name)

    @classmethod
    def register_default_dataset(cls):
        return cls.register(LOAD_DATASET, _DEFAULTS[LOAD_DATASET])

    @classmethod
    def register_default_pre_process(cls):
        return cls.register(PRE_PROCESS_DATA, _DEFAULTS[PRE_PROCESS_DATA])

    @classmethod
    def register_default_post_process(cls):
        return cls.register(POST_PROCESS_DATA, _DEFAULTS[POST_PROCESS_DATA])

    @classmethod
    def register_default_dataloader(cls):
        return cls.register(DATALOADER, _DEFAULTS[DATALOADER])

    @classmethod
    def get_component(cls, component, name):
        return cls._REGISTRY[component][name.lower()]
