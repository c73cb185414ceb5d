"""The hand-encoded sealed frames (shared/cluster/state.py) are what protobuf reads."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from contracts.generated.sipmesh.cluster.v1 import cluster_pb2 as pb
from shared.cluster.state import encode_frame, encode_sealed

packets = st.lists(st.builds(
    lambda src, dst, payload, ack: pb.Packet(src=src, dst=dst, ttl=25, msg=pb.Generic(
        cap="c", payload=payload, ack_id=ack)),
    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=300),
    st.integers(0, 2**64 - 1)), max_size=20)


@given(packets, st.integers(1, 2**64 - 1), st.binary(min_size=32, max_size=32))
def test_protobuf_reads_what_we_encode(batch: list[pb.Packet], seq: int, mac: bytes) -> None:
    body = encode_sealed([p.SerializeToString() for p in batch])
    assert list(pb.Sealed.FromString(body).packets) == batch
    assert body == pb.Sealed(packets=batch).SerializeToString()
    frame = pb.Frame.FromString(encode_frame(seq, body, mac))
    assert (frame.seq, frame.body, frame.mac) == (seq, body, mac)
    if batch:  # (frames are never empty; protobuf leaves an empty body out)
        assert encode_frame(seq, body, mac) == pb.Frame(
            seq=seq, body=body, mac=mac).SerializeToString()


def test_a_large_body_needs_a_multi_byte_length() -> None:
    body = encode_sealed([b"x" * 300_000])
    assert pb.Frame.FromString(encode_frame(3, body, b"m" * 32)).body == body
