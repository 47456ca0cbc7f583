"""Olive's data component registry (olive/data/registry.py, 0.4 to 0.9): the same decorators, names kept
in lower case as Olive keeps them, so a user script registers its functions unchanged."""

from enum import Enum

LOAD_DATASET, PRE_PROCESS_DATA, POST_PROCESS_DATA, DATALOADER = (
    "load_dataset", "pre_process_data", "post_process_data", "dataloader")
KINDS = (LOAD_DATASET, PRE_PROCESS_DATA, POST_PROCESS_DATA, DATALOADER)
_DEFAULTS = {LOAD_DATASET: "default_load_dataset", PRE_PROCESS_DATA: "default_pre_process_data",
             POST_PROCESS_DATA: "default_post_process_data", DATALOADER: "default_dataloader"}


def _decorators(kind):
    """A kind's two class-level decorators: by name (default: the function's), and under Olive's default name."""
    return (classmethod(lambda cls, name=None: cls.register(kind, name)),
            classmethod(lambda cls: cls.register(kind, _DEFAULTS[kind])))


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

    # Olive's per-kind decorators: register_dataset(name=None) and register_default_dataset(), and so on.
    register_dataset, register_default_dataset = _decorators(LOAD_DATASET)
    register_pre_process, register_default_pre_process = _decorators(PRE_PROCESS_DATA)
    register_post_process, register_default_post_process = _decorators(POST_PROCESS_DATA)
    register_dataloader, register_default_dataloader = _decorators(DATALOADER)

    @classmethod
    def get_component(cls, component, name):
        return cls._REGISTRY[component][name.lower()]
