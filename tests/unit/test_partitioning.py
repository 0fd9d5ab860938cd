"""Where a subscription's events go: the vectorised murmur2 behind ``partitions_of`` puts
every key where Kafka's default partitioner (aiokafka's port of the Java client) does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from base.events import partition_of, partitions_of


@settings(max_examples=300)
@given(
    keys=st.lists(st.binary(max_size=40), max_size=60),
    partitions=st.sampled_from([1, 2, 3, 4, 7, 12, 64, 1000, 65_536]),
)
def test_many_keys_go_where_the_kafka_partitioner_puts_each(
    keys: list[bytes], partitions: int
) -> None:
    assert partitions_of(keys, partitions) == [partition_of(key, partitions) for key in keys]
