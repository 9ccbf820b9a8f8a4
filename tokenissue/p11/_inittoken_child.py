"""Child process for C_InitToken, which python-pkcs11 does not expose.

Run as ``python -m tokenissue.p11._inittoken_child``; reads one JSON object on stdin
(module, label, so_pin, user_pin, serial or null for a free slot) and prints one JSON object.
PINs travel over a pipe, never argv. PyKCS11 must not share a process with python-pkcs11
(its finaliser calls C_Finalize under the other library's feet), hence the separate process.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    req = json.loads(sys.stdin.read())
    try:
        import PyKCS11
    except ImportError:
        print(json.dumps({"error": "nopykcs11"}))
        return 3
    lib = PyKCS11.PyKCS11Lib()
    lib.load(req["module"])
    slot = None
    matches = []
    for s in lib.getSlotList(tokenPresent=True):
        info = lib.getTokenInfo(s)
        initialized = bool(info.flags & PyKCS11.CKF_TOKEN_INITIALIZED)
        serial = info.serialNumber.strip()
        if req.get("serial"):
            # By serial AND current label: serials repeat on some modules (every tpm2-pkcs11
            # token has 0000000000000000), and erasing the wrong token cannot be undone.
            label_now = req.get("current_label")
            if initialized and serial.lower() == req["serial"].lower() and (label_now is None or info.label.strip() == label_now):
                matches.append(s)
        elif not initialized:
            slot = s
            break
    if req.get("serial"):
        if len(matches) > 1:
            print(json.dumps({"error": "ambiguous"}))
            return 4
        slot = matches[0] if matches else None
    if slot is None:
        print(json.dumps({"error": "noslot"}))
        return 4
    # CK_TOKEN_INFO.label is exactly 32 bytes, blank-padded (PKCS#11 §3.2). PyKCS11 hands the
    # string's buffer straight to C_InitToken, which reads 32 bytes: an unpadded label comes out
    # NUL-padded ("test\0\0..."), and tools that compare all 32 bytes (p11tool, RFC 7512 URIs
    # with token=test) then never find the token. Pad to 32 UTF-8 bytes with spaces.
    label = req["label"] + " " * max(0, 32 - len(req["label"].encode("utf-8")))
    try:
        lib.initToken(slot, req["so_pin"], label)
        session = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
        session.login(req["so_pin"], PyKCS11.CKU_SO)
        session.initPin(req["user_pin"])
        session.logout()
        session.closeSession()
    except PyKCS11.PyKCS11Error as e:
        print(json.dumps({"error": "pkcs11", "rv": PyKCS11.CKR[e.value] if e.value in PyKCS11.CKR else str(e.value)}))
        return 4
    # SoftHSM moves the new token to another slot on the next C_Initialize; until then the
    # old slot still answers with the new token's info, so report it by serial.
    serial = lib.getTokenInfo(slot).serialNumber.strip()
    print(json.dumps({"serial": serial}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
