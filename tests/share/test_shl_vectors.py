"""SHL payloads and files against the IG's published examples, and our own small vectors."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from share_support import FIXTURES, SHL_DATA, decode_qr_png, independent_decrypt

from healthmesh.share import jwe, qr
from healthmesh.share.shl import InvalidLink, LinkPayload, decode, new_id, new_key

SPEC_KEY = "rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7Q"
SPEC_PAYLOAD = (
    "shlink:/eyJ1cmwiOiJodHRwczovL2Voci5leGFtcGxlLm9yZy9xci9ZOXh3a1VkdG1OOXd3b0pvTjNmZkpJaFgy"
    "VUd2Q0wxSm5sUFZOTDNrRFdNL20iLCJmbGFnIjoiTFAiLCJrZXkiOiJyeFRnWWxPYUtKUEZ0Y0VkMHFjY2VOOHdF"
    "VTRwOTRTcUF3SVdRZTZ1WDdRIiwibGFiZWwiOiJCYWNrLXRvLXNjaG9vbCBpbW11bml6YXRpb25zIGZvciBPbGl2"
    "ZXIgQnJvd24ifQ"
)
needs_shared = pytest.mark.skipif(
    not SHL_DATA.is_dir(), reason=f"the IG's example links are not at {SHL_DATA}"
)
EXAMPLES = ["IPS_IG-bundle-01", "IPS_IG_bundle-minimal"]


def test_the_spec_payload_example_encodes_byte_for_byte() -> None:
    payload = LinkPayload(
        url="https://ehr.example.org/qr/Y9xwkUdtmN9wwoJoN3ffJIhX2UGvCL1JnlPVNL3kDWM/m",
        flag="PL",  # given unsorted: the payload sorts it
        key=SPEC_KEY,
        label="Back-to-school immunizations for Oliver Brown",
    )
    assert payload.encode() == SPEC_PAYLOAD
    assert decode(SPEC_PAYLOAD) == payload
    assert decode(f"https://viewer.example/#{SPEC_PAYLOAD}") == payload


def test_the_key_thumbprint_is_the_rfc7638_kid_of_the_spec_key() -> None:
    assert jwe.key_id(SPEC_KEY) == "ufYGlu_C8IuzJ3HV-wQqsIv-pMm2uZm-vGy37r3hwts"


def test_payload_rules_refuse_u_with_p_long_labels_long_urls_and_bad_keys() -> None:
    url = "https://h.example/shl/" + new_id()
    with pytest.raises(InvalidLink, match="never go together"):
        LinkPayload(url=url, key=new_key(), flag="UP")
    with pytest.raises(InvalidLink, match="label"):
        LinkPayload(url=url, key=new_key(), label="x" * 81)
    with pytest.raises(InvalidLink, match="url"):
        LinkPayload(url="https://h.example/" + "a" * 120, key=new_key())
    with pytest.raises(InvalidLink, match="key"):
        LinkPayload(url=url, key="short")
    with pytest.raises(InvalidLink):
        decode("shlink:/not-base64-json!")
    assert LinkPayload(url=url, key=new_key(), label="x" * 80).label == "x" * 80


def test_link_ids_and_keys_carry_256_bits() -> None:
    ids = {new_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(jwe.b64url_decode(i)) == 32 for i in ids)
    assert all(len(k) == 43 and len(jwe.b64url_decode(k)) == 32 for k in (new_key(),))


@needs_shared
@pytest.mark.parametrize("name", EXAMPLES)
def test_ig_example_links_decrypt_to_exactly_the_published_bundles(name: str) -> None:
    link = decode((SHL_DATA / f"{name}-shl.txt").read_text())
    assert link.flag == "LU"
    local = SHL_DATA / Path(link.url).name  # the url's host is not reachable here
    plaintext, header = jwe.decrypt(local.read_text(), link.key)
    published = (SHL_DATA / f"{name}.decrypted.json").read_bytes()
    assert plaintext == published
    assert header["kid"] == jwe.key_id(link.key)
    assert independent_decrypt(local.read_text(), link.key)[0] == published


@needs_shared
@pytest.mark.parametrize("name", EXAMPLES)
def test_the_ig_example_qr_pngs_read_as_their_links(name: str) -> None:
    scanned = decode_qr_png((SHL_DATA / f"{name}-shl.png").read_bytes())
    assert scanned == (SHL_DATA / f"{name}-shl.txt").read_text().strip()


def test_our_recorded_file_vector_still_decrypts() -> None:
    vector = json.loads((FIXTURES / "jwe-vector.json").read_text())
    plaintext, header = jwe.decrypt(vector["jwe"], vector["key"])
    assert orjson.loads(plaintext) == json.loads((FIXTURES / "summary-bundle.json").read_text())
    assert header == {
        "alg": "dir",
        "enc": "A256GCM",
        "cty": "application/fhir+json",
        "kid": jwe.key_id(vector["key"]),
        "zip": "DEF",
    }


def test_files_over_joserfcs_64_kb_default_round_trip() -> None:
    key = new_key()
    big = orjson.dumps({"resourceType": "Binary", "data": "A" * 3_000_000})
    token = jwe.encrypt(big, key, "application/fhir+json", compress=False)
    assert len(token) > 4_000_000
    assert jwe.decrypt(token, key)[0] == big
    assert independent_decrypt(token, key)[0] == big


def test_a_wrong_key_or_a_changed_byte_is_refused() -> None:
    key = new_key()
    token = jwe.encrypt(b'{"a": 1}', key, "application/fhir+json")
    with pytest.raises(jwe.DecryptionFailed):
        jwe.decrypt(token, new_key())
    head, rest = token.split(".", 1)
    flipped = rest[:-3] + ("A" if rest[-3] != "A" else "B") + rest[-2:]
    with pytest.raises(jwe.DecryptionFailed):
        jwe.decrypt(f"{head}.{flipped}", key)


def test_link_qr_png_reads_back_with_opencv() -> None:
    link = LinkPayload(url="https://h.example/shl/" + new_id(), key=new_key(), flag="U")
    assert decode_qr_png(qr.link_qr(link.encode())) == link.encode()
    viewer = link.viewer_url("https://viewer.example/")
    assert decode_qr_png(qr.link_qr(viewer)) == viewer
    assert qr.link_qr(viewer, "svg").startswith(b"<?xml") or b"<svg" in qr.link_qr(viewer, "svg")
