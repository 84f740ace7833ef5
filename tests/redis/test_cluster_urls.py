"""The Redis Cluster URL form: parsing, redaction, and what `connect` says when a cluster cannot be used."""

import socket

import pytest

from pipeline.core.errors import GalleryError
from pipeline.redis.connect import connect
from pipeline.redis.urls import is_cluster, is_local, parse_cluster, redact_cluster


@pytest.mark.parametrize("url, node_url, seeds", [
    ("redis+cluster://:p%40ss@10.0.0.1:7000,10.0.0.2:7001", "redis://:p%40ss@10.0.0.1:7000",
     (("10.0.0.1", 7000), ("10.0.0.2", 7001))),
    ("redis+cluster://cache.example", "redis://cache.example", (("cache.example", 6379),)),
    ("rediss+cluster://u:pw@a:1,[::1]:2/0?ssl_ca_certs=/ca.pem", "rediss://u:pw@a:1/0?ssl_ca_certs=/ca.pem",
     (("a", 1), ("::1", 2))),
])
def test_cluster_urls_parse_into_seeds_and_one_node_url(url, node_url, seeds):
    parsed = parse_cluster(url)
    assert (parsed.node_url, parsed.seeds) == (node_url, seeds)
    assert is_cluster(url) and not is_local(url)  # never the embedded server's business


@pytest.mark.parametrize("url, shown", [
    ("redis+cluster://:s3cret@a:1,b:2", "redis+cluster://:***@a:1,b:2"),
    ("rediss+cluster://bob:s3cret@a:1,b:2/0?password=s3cret", "rediss+cluster://bob:***@a:1,b:2/0?password=***"),
    ("redis+cluster://a:1,b:2", "redis+cluster://a:1,b:2"),
    ("redis+cluster://bob@a:1", "redis+cluster://bob@a:1"),
])
def test_cluster_urls_are_shown_without_secrets(url, shown):
    assert redact_cluster(url) == shown and "s3cret" not in parse_cluster(url).shown


@pytest.mark.parametrize("url, problem", [
    ("redis+cluster://:s3cret@a:1/2", "database 0 only"),
    ("redis+cluster://:s3cret@a:1,b:port", "'b:port' is not host:port"),
    ("redis+cluster://:s3cret@a:1,", "'' is not host:port"),
])
def test_malformed_cluster_urls_say_why(url, problem):
    with pytest.raises(GalleryError, match=problem) as info:
        parse_cluster(url)
    assert "s3cret" not in str(info.value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_cluster_is_named_without_its_password_and_never_embedded(tmp_path):
    url = f"redis+cluster://:s3cret@127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    with pytest.raises(GalleryError, match=r"cannot use Redis Cluster at redis\+cluster://:\*\*\*@127\.0\.0\.1:"
                                           r".*no seed node answered") as info:
        connect(url, tmp_path)
    assert "s3cret" not in str(info.value)
    assert not (tmp_path / "redis").exists()  # a local cluster URL never starts the embedded server


def test_a_server_not_in_cluster_mode_is_called_that(redis_server, tmp_path):
    url = f"redis+cluster://:{redis_server.password}@127.0.0.1:{redis_server.port}"
    with pytest.raises(GalleryError, match="not in cluster mode") as info:
        connect(url, tmp_path)
    assert redis_server.password not in str(info.value)


def test_a_wrong_cluster_password_is_an_authentication_failure(redis_server, tmp_path):
    with pytest.raises(GalleryError, match="authentication failed") as info:
        connect(f"redis+cluster://:wrong-s3cret@127.0.0.1:{redis_server.port}", tmp_path)
    assert "wrong-s3cret" not in str(info.value)
