"""A socket path the SDK cannot use gets an error that says what is wrong
with that path (as the CLI's does), not gRPC's "failed to connect"."""

import os

import pytest

from switchyard import BrokerNotRunningError, BrokerUnreachableError
from switchyard.sync import Client


def open_error(path):
    client = Client.create(socket=str(path))
    with pytest.raises(BrokerUnreachableError) as caught:
        client.open()
    return caught.value


def test_no_broker_names_the_command_with_its_socket(tmp_path):
    path = tmp_path / "absent.sock"
    err = open_error(path)
    assert isinstance(err, BrokerNotRunningError)
    assert f"start it with `switchyard --socket {path} broker`" in str(err)


def test_a_regular_file(tmp_path):
    path = tmp_path / "plain"
    path.write_text("")
    err = open_error(path)
    assert not isinstance(err, BrokerNotRunningError)
    assert "is not a socket (it is a regular file)" in str(err)


def test_a_directory(tmp_path):
    err = open_error(tmp_path)
    assert f"{tmp_path} is a directory" in str(err)
    assert str(tmp_path / "broker.sock") in str(err)


def test_a_path_too_long_for_a_unix_socket(tmp_path):
    path = tmp_path / ("x" * 120)
    err = open_error(path)
    assert f"is {len(os.fsencode(str(path)))} bytes long" in str(err)
    assert "at most 107" in str(err)
