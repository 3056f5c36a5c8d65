"""The SDK's cloud methods against a real relay, an enrolled service and a
broker (all `switchyard` processes on loopback), and the SSO approval page
driven once by a real headless Chromium over WebDriver."""

import json
import os
import shutil
import ssl
import subprocess
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest

from conftest import BIN, Tinyproxy, read_line, run
from switchyard import SwitchyardError
from switchyard.sync import Client, ProxyInfo

ALICE = "alice@example.com"
ALICE_PW = "alice-sso-pw"
SERIAL = "SN-PY"


def _proc(args, **kw):
    return subprocess.Popen([BIN, *args], text=True, **kw)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """A relay, a broker that names it as its default domain, and a
    service enrolled with it (through the broker's CLI, as a person
    would)."""
    d = tmp_path_factory.mktemp("cloud")
    procs = []
    try:
        state = d / "relay"
        run("relay", "init", "--state", str(state))
        (d / "alice").write_text(ALICE_PW + "\n")
        run("relay", "user", "add", ALICE, "--state", str(state), "--password-file", str(d / "alice"))
        relay = _proc(
            ["relay", "run", "--state", str(state), "--listen", "127.0.0.1:0",
             "--http-listen", "127.0.0.1:0", "--poll-interval", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        procs.append(relay)
        ready = json.loads(read_line(relay, relay.stdout, '"url"'))
        url, ca = ready["url"], str(state / "ca.pem")

        config = d / "broker.toml"
        config.write_text(f'[domains.test]\nurl = "{url}"\nca_file = "{ca}"\ndefault = true\n')
        sock = d / "broker.sock"
        env = dict(os.environ, XDG_STATE_HOME=str(d / "bstate"), XDG_CONFIG_HOME=str(d / "cfg"))
        env.pop("SWITCHYARD_SOCKET", None)
        broker = _proc(["--config", str(config), "broker", "--socket", str(sock)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        procs.append(broker)
        read_line(broker, broker.stderr, "switchyard broker listening on")
        cli_env = dict(env, SWITCHYARD_SOCKET=str(sock))

        token = run("relay", "token", "issue", ALICE, "--state", str(state), "--lifetime", "1h").stdout.strip()
        (d / "token").write_text(token + "\n")
        run("login", "token", "--token-file", str(d / "token"), env=cli_env)
        otp = run("enroll", "service-otp", "--serial", SERIAL, env=cli_env).stdout.strip()
        (d / "otp").write_text(otp + "\n")
        run("logout", env=cli_env)

        (d / "admin").write_text("svc-admin\n")
        admin = ["--db", str(d / "inv.db"), "--admin-password-file", str(d / "admin")]
        run("service", *admin, "init")
        run("service", *admin, "device", "add", "core-1", "--driver", "simulator")
        run("service", *admin, "user", "add", ALICE, "--cloud")
        run("service", *admin, "enroll", "--relay", url, "--otp-file", str(d / "otp"), "--relay-ca", ca)
        service = _proc(["service", *admin, "run", "--listen", "127.0.0.1:0", "--name", "py-cloud"],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(service)
        svc = json.loads(read_line(service, service.stdout, "rpc_addr"))
        assert svc["serial"] == SERIAL
        yield {
            "dir": d, "url": url, "ca": ca, "sock": str(sock), "token": token,
            "env": cli_env, "rpc_addr": svc["rpc_addr"],
        }
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=30)


def approve(cloud, user_code, decision="approve", password=ALICE_PW):
    """Submits the approval form over HTTPS, as a person would."""
    ctx = ssl.create_default_context(cafile=cloud["ca"])
    data = urllib.parse.urlencode({
        "user_code": user_code, "email": ALICE, "password": password, "decision": decision,
    }).encode()
    try:
        with urllib.request.urlopen(f"{cloud['url']}/device", data=data, context=ctx, timeout=30) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        return e.read().decode()


def test_access_token_login_and_service_cloud(cloud):
    with Client.create(socket=cloud["sock"]) as client:
        login = client.access_token_login(cloud["token"])
        assert (login.identity, login.method) == (ALICE, "token")
        service = client.service_cloud(SERIAL).wait(timeout=20)
        assert service.name == "py-cloud"
        result = service.inventory["core-1"].exec("show version").wait(timeout=30)
        assert "Simulated Network OS" in result.result["core-1"].data
        links = client.status().links
        assert any(l.transport == "relayed" and l.state == "up" for l in links)


def test_service_direct_with_sso(cloud):
    host, port = cloud["rpc_addr"].rsplit(":", 1)
    with Client.create(socket=cloud["sock"]) as client:
        client.access_token_login(cloud["token"])
        service = client.service_direct_with_sso(SERIAL, host=host, port=int(port)).wait(timeout=20)
        result = service.inventory["core-1"].exec("show clock").wait(timeout=30)
        assert "UTC" in result.result["core-1"].data


def test_sso_login_with_approval_over_http(cloud):
    prompts = []

    def on_prompt(prompt):
        prompts.append(prompt.user_code)
        threading.Thread(target=approve, args=(cloud, prompt.user_code), daemon=True).start()

    with Client.create(socket=cloud["sock"]) as client:
        login = client.sso_login(ALICE, on_prompt=on_prompt, timeout=60)
        assert login.method == "sso" and len(prompts) == 1
        client.service_cloud(SERIAL).wait(timeout=20)


def test_certificate_login(cloud):
    d = cloud["dir"] / "certs"
    (cloud["dir"] / "keypw").write_text("key-pw\n")
    run("login", "token", "--token-file", str(cloud["dir"] / "token"), env=cloud["env"])
    run("enroll", "client", "--identity", ALICE, "--password-file", str(cloud["dir"] / "keypw"),
        "--cert-dir", str(d), env=cloud["env"])
    assert (d / "key.enc").stat().st_mode & 0o777 == 0o600
    with Client.create(socket=cloud["sock"]) as client:
        with pytest.raises(SwitchyardError) as err:
            client.certificate_login(ALICE, password="wrong", cert_dir=str(d))
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        login = client.certificate_login(ALICE, password="key-pw", cert_dir=str(d))
        assert login.method == "certificate"
        client.service_cloud(SERIAL, identity=ALICE).wait(timeout=20)


def test_wait_names_an_offline_service(cloud):
    with Client.create(socket=cloud["sock"]) as client:
        client.access_token_login(cloud["token"])
        with pytest.raises(SwitchyardError) as err:
            client.service_cloud("SN-NOT-ENROLLED").wait(timeout=2)
        assert "SN-NOT-ENROLLED" in str(err.value)


def _spki_sha256(cert_pem_path):
    """Base64 SHA-256 of a certificate's public key, for Chromium's
    --ignore-certificate-errors-spki-list (trust exactly this key)."""
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", cert_pem_path],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"],
                         input=pub, check=True, capture_output=True).stdout
    import base64
    import hashlib
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.mark.skipif(not shutil.which("chromedriver"), reason="chromium-driver is not installed")
def test_sso_approval_page_in_headless_chromium(cloud, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    spki = _spki_sha256(str(Path(cloud["ca"]).parent / "server.pem"))
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}",
                 f"--ignore-certificate-errors-spki-list={spki}"):
        options.add_argument(flag)
    errors = []

    def on_prompt(prompt):
        def drive():
            driver = webdriver.Chrome(service=DriverService(shutil.which("chromedriver")), options=options)
            try:
                driver.set_page_load_timeout(30)
                driver.get(prompt.verification_uri_complete)
                assert driver.find_element(By.ID, "user_code").get_attribute("value") == prompt.user_code
                assert driver.find_element(By.ID, "email").get_attribute("value") == ALICE
                driver.find_element(By.ID, "password").send_keys(ALICE_PW)
                driver.find_element(By.ID, "approve").click()
                result = WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "result")))
                assert "Approved" in result.text
            except Exception as e:  # reported by the main thread
                errors.append(e)
            finally:
                driver.quit()

        threading.Thread(target=drive, daemon=True).start()

    with Client.create(socket=cloud["sock"]) as client:
        client.logout()
        login = client.sso_login(ALICE, on_prompt=on_prompt, timeout=90)
        assert not errors, errors
        assert login.method == "sso"
        client.service_cloud(SERIAL, identity=ALICE).wait(timeout=20)


REF_SCRIPTS = Path(__file__).resolve().parent / "reference_scripts"


def test_reference_cloud_scripts_with_only_the_import_changed(cloud):
    """The guide's cloud scripts (tests/python/reference_scripts): module
    functions on create_context(); input() prompts then an SSO login
    approved over HTTP; a direct connection on the SSO login."""
    pexpect = pytest.importorskip("pexpect")
    import sys

    from conftest import run_script

    host, port = cloud["rpc_addr"].rsplit(":", 1)
    env = dict(cloud["env"], REF_SERIAL=SERIAL, REF_EMAIL=ALICE, REF_TOKEN=cloud["token"],
               REF_HOST=host, REF_PORT=port)
    out = run_script([sys.executable, REF_SCRIPTS / "cloud_context.py"], env)
    assert out.returncode == 0, out.stderr
    assert "core-1" in out.stdout

    with Client.create(socket=cloud["sock"]) as client:
        client.logout()
    child = pexpect.spawn(sys.executable, [str(REF_SCRIPTS / "cloud_input.py")], env=env,
                          timeout=60, encoding="utf-8")
    child.expect("email> ")
    child.sendline(ALICE)
    child.expect("domain> ")
    child.sendline("test")
    child.expect("service serial> ")
    child.sendline(SERIAL)
    child.expect(r"shows the code (\S+)\.")
    assert "Approved" in approve(cloud, child.match.group(1))
    child.expect("Inventory of 1 devices")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before

    # The broker holds the SSO login for this local user: no new prompt.
    out = run_script([sys.executable, REF_SCRIPTS / "cloud_direct_sso.py"], env)
    assert out.returncode == 0, out.stderr
    assert "core-1" in out.stdout and "open" not in out.stderr


def test_login_errors_have_their_own_classes(cloud):
    """An expired token raises ExpiredError; a forged one
    WrongCredentialsError; a relay that does not answer UnreachableError."""
    import time

    from switchyard import ExpiredError, UnreachableError, WrongCredentialsError

    state = str(Path(cloud["ca"]).parent)
    short = run("relay", "token", "issue", ALICE, "--state", state, "--lifetime", "1s").stdout.strip()
    with Client.create(socket=cloud["sock"]) as client:
        with pytest.raises(WrongCredentialsError) as err:
            client.access_token_login(cloud["token"][:-4] + "AAAA")
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        deadline = time.monotonic() + 30
        while True:  # the token expires one second after it was issued
            try:
                client.access_token_login(short)
            except ExpiredError as e:
                assert "expired" in str(e).lower()
                break
            assert time.monotonic() < deadline, "a 1 s token still logged in after 30 s"
            time.sleep(0.2)
        with pytest.raises(UnreachableError):
            client.access_token_login(cloud["token"], relay_url="https://127.0.0.1:1")


def test_access_token_login_through_a_real_proxy(cloud, tmp_path):
    """ProxyInfo(url, username, password) on access_token_login: the broker
    reaches the relay through a real tinyproxy with Basic authentication
    (its HTTPS requests and its relay connection, then over TLS/TCP; the
    proxy's log shows both CONNECTs) and a relayed exec works; wrong proxy
    credentials are an error naming the proxy, without the password."""
    proxy = Tinyproxy(tmp_path, ("bob", "pr0xy-pass"))
    relay_port = urllib.parse.urlsplit(cloud["url"]).port
    try:
        with Client.create(socket=cloud["sock"]) as client:
            with pytest.raises(SwitchyardError, match="refused CONNECT") as err:
                client.access_token_login(cloud["token"],
                                          proxy=ProxyInfo(proxy.url, "bob", "wr0ng-pass"))
            assert f"127.0.0.1:{proxy.port}" in str(err.value)
            assert "wr0ng-pass" not in str(err.value)
            login = client.access_token_login(cloud["token"],
                                              proxy=ProxyInfo(proxy.url, "bob", "pr0xy-pass"))
            assert login.identity == ALICE
            assert f"CONNECT 127.0.0.1:{relay_port}" in proxy.log()
            [status] = [l for l in client.status().logins if l.method == "token"]
            assert status.carrier == f"tcp via proxy 127.0.0.1:{proxy.port}"
            service = client.service_cloud(SERIAL).wait(timeout=20)
            result = service.inventory["core-1"].exec("show version").wait(timeout=30)
            assert "Simulated Network OS" in result.result["core-1"].data
            # The relay connection itself went through the proxy too (the
            # relay's TCP listener, beside its QUIC port).
            assert proxy.log().count("CONNECT 127.0.0.1:") >= 2, proxy.log()
            client.logout()
    finally:
        proxy.close()
