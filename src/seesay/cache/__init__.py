"""The two-level response cache: keys, cacheability policy, L1 memory, L2 Redis, single flight.

Contract: a repeated deterministic question about the same (normalised) picture is answered
from memory or from Redis instead of the engine, on every replica, and Redis trouble never
fails or stalls a request. Start with :func:`key_for`, :class:`CachePolicy` and
:func:`build_response_cache`; module docstrings hold the details. Nothing here imports
torch, transformers or prometheus; redis-py is imported only when a Redis tier is created.
"""

from seesay.cache.breaker import BreakerConfig, BreakerState, CircuitBreaker
from seesay.cache.codec import CorruptValueError, decode_result, encode_result
from seesay.cache.keys import KEY_SCHEMA_VERSION, CacheKey, key_for
from seesay.cache.memory import MemoryCache, MemoryCacheConfig, MemoryStats
from seesay.cache.phash import NearDuplicateIndex, NearDuplicateRule, PerceptualHash, perceptual_hash
from seesay.cache.policy import CacheDecision, CacheMode, CacheOptOut, CachePolicy, parse_cache_control
from seesay.cache.redis import RedisCache, RedisCacheConfig, RedisStats, SharedCacheUnavailableError
from seesay.cache.shared_phash import SharedNearDuplicateIndex
from seesay.cache.tiered import (
    SHARED_TIERS,
    CacheLookup,
    CacheStats,
    ClearReport,
    ResponseCache,
    build_response_cache,
)

__all__ = [
    "KEY_SCHEMA_VERSION",
    "SHARED_TIERS",
    "BreakerConfig",
    "BreakerState",
    "CacheDecision",
    "CacheKey",
    "CacheLookup",
    "CacheMode",
    "CacheOptOut",
    "CachePolicy",
    "CacheStats",
    "CircuitBreaker",
    "ClearReport",
    "CorruptValueError",
    "MemoryCache",
    "MemoryCacheConfig",
    "MemoryStats",
    "NearDuplicateIndex",
    "NearDuplicateRule",
    "PerceptualHash",
    "RedisCache",
    "RedisCacheConfig",
    "RedisStats",
    "ResponseCache",
    "SharedCacheUnavailableError",
    "SharedNearDuplicateIndex",
    "build_response_cache",
    "decode_result",
    "encode_result",
    "key_for",
    "parse_cache_control",
    "perceptual_hash",
]
