"""Running at paper scale: compute jobs without network (OPTIN_OFFLINE=1), where an attempted
connection fails at once with a message naming the prefetch instead of hanging; which slim
checkpoints stay on disk (evaluation.keep_slim)."""

import os
import subprocess
import sys
import textwrap

# A TEST-NET-1 address (RFC 5737): nothing answers, so a real connection attempt hangs until its timeout.
BLACKHOLE = "http://192.0.2.1/weights.pt"


def job(code: str, **env) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter after start_job, as a rule script runs."""
    preamble = "from optin.workflow.runtime import start_job\nstart_job(None, threads=1, offline=False, light=True)\n"
    clean = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "OPTIN_OFFLINE")}
    # The subprocess timeout is far below the connection's own: a hang fails the test.
    return subprocess.run([sys.executable, "-c", preamble + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, env={**clean, **env})


def test_an_outbound_connection_fails_at_once_naming_the_prefetch():
    result = job(f"""
        import urllib.request
        urllib.request.urlopen("{BLACKHOLE}", timeout=600)
    """, OPTIN_OFFLINE="1")
    assert result.returncode != 0
    assert "outbound connection to 192.0.2.1 refused: OPTIN_OFFLINE=1" in result.stderr
    assert "make prefetch" in result.stderr


def test_name_lookups_are_refused_too_but_loopback_stays_open():
    result = job("""
        import socket
        try:
            socket.getaddrinfo("huggingface.co", 443)
        except ConnectionRefusedError as err:
            print("lookup refused:", err)
        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname(), timeout=5)
        print("loopback ok")
    """, OPTIN_OFFLINE="1")
    assert result.returncode == 0, result.stderr
    assert "lookup refused: outbound connection to huggingface.co refused" in result.stdout
    assert "loopback ok" in result.stdout


def test_the_guard_also_puts_the_hub_libraries_offline():
    result = job("""
        import os
        print(os.environ["HF_HUB_OFFLINE"], os.environ["TRANSFORMERS_OFFLINE"])
    """, OPTIN_OFFLINE="1")
    assert result.stdout.split() == ["1", "1"], result.stderr


def test_without_the_setting_jobs_keep_the_network():
    result = job("""
        import socket
        print(socket.socket.connect.__qualname__)
    """)
    assert "guarded" not in result.stdout and result.returncode == 0


def test_keep_slim_keeps_all_none_or_the_listed_budgets_and_always_the_segmentation_figures():
    from optin.workflow.config import slim_kept

    assert slim_kept({}, "0.500", segmentation=False)  # default: all
    assert not slim_kept({"keep_slim": "none"}, "0.500", segmentation=False)
    listed = {"keep_slim": [0.5, 0.7], "qualitative_budget": 0.6}
    assert [slim_kept(listed, b, segmentation=False) for b in ("0.500", "0.600", "0.700")] == [True, False, True]
    assert slim_kept({"keep_slim": "none", "qualitative_budget": 0.6}, "0.600", segmentation=True)
    assert not slim_kept({"keep_slim": "none", "qualitative_budget": 0.6}, "0.600", segmentation=False)
