"""A stand-in for TensorRT's Python API where TensorRT cannot be installed (no GPU here)."""

from __future__ import annotations

from pathlib import Path


class FakeTrt:
    """The slice of TensorRT 10's Python API that the engine builder calls, recording what it is told."""

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    MemoryPoolType = BuilderFlag = DeviceType = type("Enum", (), {"__getattr__": lambda self, n: n})()

    def __init__(self, cache_matches: bool = True, dla_cores: int = 0, version: str = "10.3.0"):
        self.cache_matches, self.dla_cores, self.calls, self.__version__ = cache_matches, dla_cores, [], version
        fake = self

        class Cache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                return b"cache:" + self.data

        class Config:
            def __init__(self):
                self.cache = None

            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("pool", pool, size))

            def set_flag(self, flag):
                fake.calls.append(("flag", flag))

            def create_timing_cache(self, data):
                return Cache(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                ok = fake.cache_matches or cache.data == b""
                self.cache = cache if ok else None
                return ok

            def get_timing_cache(self):
                return self.cache

            def add_optimization_profile(self, profile):
                fake.calls.append(("profile", profile.shapes))

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (lo, opt, hi)

        class Network:
            num_inputs = 1

            def get_input(self, i):
                return type("Input", (), {"name": "frames"})()

        class Builder:
            num_DLA_cores = dla_cores

            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"engine"

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                fake.calls.append(("parse", Path(path).name))
                return True

        self.Builder, self.OnnxParser = Builder, OnnxParser
