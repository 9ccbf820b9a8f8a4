"""Data kept next to a key on the token (the Korean VID's R, issue 13): a private CKO_DATA
object with the key's label, naming the key's CKA_ID in CKA_APPLICATION, read back on each implementation, never visible without
login, replaced not doubled, and gone with its key."""

from __future__ import annotations

from pkcs11 import Attribute, ObjectClass

from tokenissue import p11
from tokenissue.credentials import Pin
from tokenissue.models import KeyType
from tokenissue.pkix.kr_vid import ID_RANDOM_NUM

from support.cli import USER_PIN
from support.token_impls import TokenImpl, on_impls

SEL = p11.TokenSelector.parse("test")
OID_DER = bytes.fromhex("060a2a831a8c9a440a010103")  # DER of 1.2.410.200004.10.1.1.3


def _raw_data_objects(impl: TokenImpl, *, login: bool) -> list[dict[str, object]]:
    """The token's data objects as another PKCS#11 client sees them."""
    mod = p11.load_module(impl.module)
    mod.refresh()
    token = mod.find_token(SEL)
    with token.open(user_pin=USER_PIN if login else None) as s:
        return [
            {"application": o[Attribute.APPLICATION], "label": o[Attribute.LABEL], "private": o[Attribute.PRIVATE],
             "object_id": bytes(o[Attribute.OBJECT_ID]), "value": bytes(o[Attribute.VALUE])}
            for o in s.get_objects({Attribute.CLASS: ObjectClass.DATA})
        ]  # fmt: skip


@on_impls("softhsm", "tpm2")  # data objects do not depend on the mechanism list
def test_data_lives_next_to_its_key_and_goes_with_it(session_token_impl: TokenImpl) -> None:
    assert ID_RANDOM_NUM.dotted_string == "1.2.410.200004.10.1.1.3"
    impl = session_token_impl
    with p11.open_token(SEL, Pin(USER_PIN), module=impl.module) as s:
        key = s.generate_key(KeyType.EC_P256, "vid-key")
        other = s.generate_key(KeyType.EC_P256, "other-key")
        assert s.key_data(key.id, OID_DER) is None
        s.put_key_data(key.id, OID_DER, b"\x01" * 20)
        s.put_key_data(key.id, OID_DER, b"\x02" * 20)  # re-key makes a new R: replaced, not doubled
        assert s.key_data(key.id, OID_DER) == b"\x02" * 20
        assert s.key_data(other.id, OID_DER) is None
    seen = _raw_data_objects(impl, login=True)
    assert seen == [{"application": f"tokenissue key={key.id.hex()}", "label": "vid-key", "private": True, "object_id": OID_DER, "value": b"\x02" * 20}]
    assert _raw_data_objects(impl, login=False) == []  # private: nothing without the PIN
    with p11.open_token(SEL, Pin(USER_PIN), module=impl.module) as s:
        s.delete_key(p11.KeySelector(id=key.id))
        assert [k.label for k in s.list_keys()] == ["other-key"]
    assert _raw_data_objects(impl, login=True) == []


@on_impls("softhsm")
def test_another_programs_data_under_the_same_label_is_left_alone(session_token_impl: TokenImpl) -> None:
    impl = session_token_impl
    with p11.open_token(SEL, Pin(USER_PIN), module=impl.module) as s:
        key = s.generate_key(KeyType.EC_P256, "vid-key")
    mod = p11.load_module(impl.module)
    with mod.find_token(SEL).open(rw=True, user_pin=USER_PIN) as raw:
        raw.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True, Attribute.PRIVATE: True,
                           Attribute.LABEL: "vid-key", Attribute.OBJECT_ID: OID_DER, Attribute.APPLICATION: "someone-else",
                           Attribute.VALUE: b"theirs"})  # fmt: skip
    mod.refresh()
    with p11.open_token(SEL, Pin(USER_PIN), module=impl.module) as s:
        assert s.key_data(key.id, OID_DER) is None
        s.delete_key(p11.KeySelector(id=key.id))
    assert [o["value"] for o in _raw_data_objects(impl, login=True)] == [b"theirs"]


@on_impls("softhsm", "tpm2")
def test_data_takes_its_keys_new_label(session_token_impl: TokenImpl) -> None:
    """A re-key gives the new key the old label at the end (TokenSession.relabel): R goes with it."""
    impl = session_token_impl
    with p11.open_token(SEL, Pin(USER_PIN), module=impl.module) as s:
        key = s.generate_key(KeyType.EC_P256, "temporary")
        s.put_key_data(key.id, OID_DER, b"\x03" * 20)
        assert s.relabel(key.id, "final") >= 2  # the key pair and the data at least
        assert s.relabel(key.id, "final") == 0
    assert [o["label"] for o in _raw_data_objects(impl, login=True)] == ["final"]
