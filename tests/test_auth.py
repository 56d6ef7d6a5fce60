"""API authentication: key strength, where keys may come from, insecure mode, the throttle on wrong keys."""
from __future__ import annotations

import argparse
import secrets

import pytest
from fastapi.testclient import TestClient
from test_api import EXAMPLE, KEY_A, KEY_B, StandInScorer, auth

from api.main import create_app
from api.security import MAKE_KEY, ApiSettings, AuthThrottle, estimated_bits, key_problem, matching_key
from cli.api_commands import prepare_environment
from core.config import Settings
from core.errors import UserError

WEAK_KEYS = ["changethis", "a" * 40, "password" * 5, "passwordpasswordpasswordpassword", "1234567890" * 4,
             "1234567890123456", "aaaaaaaaaaaaaaaa", "abcdefghijklmnopqrstuvwxyz0123456789", "Password123!" * 3,
             "0123456789abcdef" * 3, KEY_A[:31]]


@pytest.fixture()
def no_env(monkeypatch, tmp_path):
    """A working directory without .env and no READMIT_API_* variables."""
    monkeypatch.chdir(tmp_path)
    for name in ("READMIT_API_KEY", "READMIT_API_INSECURE_NO_AUTH", "READMIT_MODEL_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def cli_args(**overrides) -> argparse.Namespace:
    return argparse.Namespace(**{"host": "0.0.0.0", "port": 8000, "workers": 1, "model": None,
                                 "insecure_no_auth": False, **overrides})


# --- key strength ------------------------------------------------------------------------------

@pytest.mark.parametrize("weak", WEAK_KEYS)
def test_weak_keys_are_refused_with_how_to_make_one_and_never_echoed(weak):
    with pytest.raises(ValueError, match="too weak") as refused:
        ApiSettings(key=f"{KEY_A},{weak}")
    assert "key 2 " in str(refused.value) and MAKE_KEY in str(refused.value)
    assert weak not in str(refused.value) and KEY_A not in str(refused.value)


def test_random_keys_are_never_refused():
    for _ in range(5000):
        for key in (secrets.token_hex(24), secrets.token_urlsafe(32)):
            assert key_problem(key) is None, key
    assert min(estimated_bits(secrets.token_hex(24)) for _ in range(2000)) > 150


def test_keys_must_be_printable_ascii():
    assert "printable ASCII" in key_problem("é" + secrets.token_urlsafe(32))


def test_keys_come_from_the_environment_comma_separated(no_env, monkeypatch):
    monkeypatch.setenv("READMIT_API_KEY", f" {KEY_A} ,{KEY_B},")
    assert ApiSettings.from_settings(Settings()).keys() == (KEY_A.encode(), KEY_B.encode())
    monkeypatch.delenv("READMIT_API_KEY")
    with pytest.raises(ValueError, match="READMIT_API_KEY is not set"):
        ApiSettings.from_settings(Settings())


def test_matching_key_is_exact():
    keys = (KEY_A.encode(), KEY_B.encode())
    assert matching_key(KEY_B, keys) == KEY_B.encode()
    assert matching_key(KEY_B[:-1], keys) is None
    assert matching_key("", keys) is None and matching_key(None, keys) is None


# --- nothing in a .env file or a variable turns authentication off -----------------------------------

def test_dotenv_never_supplies_keys_or_insecure_mode(no_env, monkeypatch):
    (no_env / ".env").write_text(f"READMIT_API_KEY={KEY_A}\nREADMIT_API_INSECURE_NO_AUTH=true\n"
                                 "READMIT_API_MAX_BATCH=7\n")
    settings = Settings()
    assert settings.api_key is None and settings.api_max_batch == 7  # other settings still come from .env
    with pytest.raises(UserError, match="READMIT_API_KEY is not set"):
        prepare_environment(cli_args())
    monkeypatch.setenv("READMIT_API_KEY", KEY_B)
    monkeypatch.setenv("READMIT_API_INSECURE_NO_AUTH", "1")
    _, _, api_settings = prepare_environment(cli_args())
    assert not api_settings.insecure_no_auth
    with TestClient(create_app(scorer_loader=lambda _d: StandInScorer())) as client:  # the factory workers run
        assert client.post("/predict", json=EXAMPLE).status_code == 401
        assert client.post("/predict", json=EXAMPLE, headers=auth(KEY_B)).status_code == 200


def test_only_the_flag_turns_auth_off_on_loopback_and_one_worker(no_env, tmp_path):
    with pytest.raises(UserError, match="READMIT_API_KEY is not set"):
        prepare_environment(cli_args())
    host, _, api_settings = prepare_environment(cli_args(insecure_no_auth=True))
    assert host == "127.0.0.1" and api_settings.insecure_no_auth and api_settings.keys() == ()
    with pytest.raises(UserError, match="one worker"):
        prepare_environment(cli_args(insecure_no_auth=True, workers=2))
    with pytest.raises(UserError, match="config.json"):
        prepare_environment(cli_args(insecure_no_auth=True, model=str(tmp_path / "no-model")))


def test_cli_refuses_weak_keys(no_env, monkeypatch):
    monkeypatch.setenv("READMIT_API_KEY", "changethis")
    with pytest.raises(UserError, match="too weak"):
        prepare_environment(cli_args())
    monkeypatch.setenv("READMIT_API_KEY", KEY_A)
    assert prepare_environment(cli_args())[0] == "0.0.0.0"


# --- throttle ------------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_window_and_bounded_memory():
    clock = Clock()
    throttle = AuthThrottle(limit=3, window_s=60, max_clients=2, clock=clock)
    for _ in range(3):
        assert throttle.retry_after("a") == 0
        throttle.failed("a")
        clock.now += 1
    assert throttle.retry_after("a") == 57 and throttle.retry_after("b") == 0  # first failure 3 s ago
    clock.now += 57
    assert throttle.retry_after("a") == 0
    throttle.failed("b")
    throttle.failed("c")
    assert len(throttle) == 2 and throttle.retry_after("a") == 0  # 'a' forgotten first


def test_twenty_wrong_keys_a_minute_get_429_with_retry_after_and_are_counted():
    app = create_app(ApiSettings(key=KEY_A), scorer_loader=lambda _d: StandInScorer())
    with TestClient(app) as client:
        for _ in range(5):
            assert client.post("/predict", json=EXAMPLE).status_code == 401  # no key: not an attempt
        for i in range(20):
            assert client.post("/predict", json=EXAMPLE, headers=auth(f"{KEY_B}{i}")).status_code == 401
        throttled = client.post("/predict", json=EXAMPLE, headers=auth(KEY_B))
        assert throttled.status_code == 429 and 0 < int(throttled.headers["retry-after"]) <= 60
        assert client.post("/predict", json=EXAMPLE, headers=auth(KEY_A)).status_code == 429  # even the right key
        assert client.get("/health").status_code == 200
        app.state.auth_throttle = AuthThrottle()  # a minute later
        metrics = client.get("/metrics", headers=auth(KEY_A)).text
    assert "readmit_api_auth_failures_total 20.0" in metrics
    assert "readmit_api_auth_throttled_total 2.0" in metrics
