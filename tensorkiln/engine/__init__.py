"""The engine plan (frozen data) and its file format."""

from .format import deserialize_plan, load_plan, save_plan, serialize_plan, write_bytes_atomic
from .plan import DeviceInfo, EnginePlan, IOTensor, ProfileRange

__all__ = ["DeviceInfo", "EnginePlan", "IOTensor", "ProfileRange", "deserialize_plan", "load_plan",
           "save_plan", "serialize_plan", "write_bytes_atomic"]
