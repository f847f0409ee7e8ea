"""The official Python XenAPI SDK (PyPI `XenAPI`) against the XAPI emulator.

Logs in, lists SM records, creates a shared nvmetcp SR and reads it back,
follows an Async call through its task, and logs out. Prints one "ok: ..."
line per check; any failure exits non-zero with the reason.
"""

import sys
import time

import XenAPI


def check(condition, what):
    if not condition:
        sys.exit(f"XenAPI: {what}: FAILED")
    print(f"ok: {what}", flush=True)


def main(url):
    session = XenAPI.Session(url)
    session.xenapi.login_with_password("root", "xenroot", "1.0", "nvmetcp-peer-test")
    check(session._session.startswith("OpaqueRef:"), "logged in")
    try:
        bad = XenAPI.Session(url)
        bad.xenapi.login_with_password("root", "wrong")
        check(False, "a wrong password is refused")
    except XenAPI.Failure as failure:
        check(failure.details[0] == "SESSION_AUTHENTICATION_FAILED", "a wrong password is refused")

    xapi = session.xenapi
    sms = xapi.SM.get_all_records()
    check(any(sm["type"] == "nvmetcp" for sm in sms.values()), "SM records list nvmetcp")
    pool = list(xapi.pool.get_all())[0]
    master = xapi.pool.get_master(pool)
    hosts = xapi.host.get_all()
    config = {"portals": "192.0.2.20", "nqn": "nqn.2014-08.org.example:array", "dhchap_password": "DHHC-1:00:c2VjcmV0:"}
    # Python's xmlrpc cannot send integers above 2**31: sizes go as strings,
    # which XAPI accepts for int64 parameters.
    sr = xapi.SR.create(master, config, str(1 << 40), "XenAPI SR", "  spaced  ", "nvmetcp", "user", True, {})
    record = xapi.SR.get_record(sr)
    check(record["type"] == "nvmetcp" and record["shared"] is True, "the SR is a shared nvmetcp SR")
    check(record["name_description"] == "  spaced  ", "strings keep their spaces")
    check(record["physical_size"] == str(1 << 40), "int64 fields arrive as decimal strings")
    check(len(record["PBDs"]) == len(hosts), "one PBD per host")
    for pbd in record["PBDs"]:
        pbd_record = xapi.PBD.get_record(pbd)
        check(pbd_record["currently_attached"] is True, f"PBD {pbd_record['uuid']} is plugged")
        secret_uuid = pbd_record["device_config"]["dhchap_password_secret"]
        value = xapi.secret.get_value(xapi.secret.get_by_uuid(secret_uuid))
        check(value == "DHHC-1:00:c2VjcmV0:", f"PBD {pbd_record['uuid']} holds the key as a secret")
    try:
        xapi.SR.forget(sr)
        check(False, "a plugged SR cannot be forgotten")
    except XenAPI.Failure as failure:
        check(failure.details[0] == "SR_HAS_PBD", "a plugged SR cannot be forgotten")

    task = session.xenapi.Async.SR.scan(sr)
    for _ in range(200):
        if xapi.task.get_status(task) != "pending":
            break
        time.sleep(0.05)
    check(xapi.task.get_status(task) == "success", "Async.SR.scan finished through its task")
    xapi.task.destroy(task)
    session.xenapi.session.logout()
    check(True, "logged out")


if __name__ == "__main__":
    main(sys.argv[1])
