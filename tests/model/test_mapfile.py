"""openMosix map files: parsing, expansion, errors with file:line, showmap format."""

from __future__ import annotations

import os

import pytest

from omview.model import mapfile
from omview.model.errors import ConfigError


def test_seed_examples_expand() -> None:
    text = "# comment\n1  10.0.0.1     2\n3  10.0.0.100   2\n5  10.0.0.150   1\n"
    nodes = mapfile.expand(mapfile.parse(text))
    assert nodes == {1: ["10.0.0.1"], 2: ["10.0.0.2"], 3: ["10.0.0.100"], 4: ["10.0.0.101"], 5: ["10.0.0.150"]}


def test_alias_attaches_to_node() -> None:
    text = "1 192.168.1.1 1\n2 192.168.1.2 1\n3 192.168.1.3 1\n4 192.168.1.4 1\n4 192.168.10.10 ALIAS\n"
    assert mapfile.expand(mapfile.parse(text))[4] == ["192.168.1.4", "192.168.10.10"]


def test_hostnames_with_count_one() -> None:
    nodes = mapfile.expand(mapfile.parse("1 node1 1\n2 node2 1\n"))
    assert nodes == {1: ["node1"], 2: ["node2"]}


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("1 node1 3\n", 1, "needs an IP address"),
        ("1 10.0.0.1\n", 1, "expected 3 fields"),
        ("x 10.0.0.1 1\n", 1, "not a number"),
        ("1 10.0.0.1 1\n0 10.0.0.9 1\n", 2, "outside 1..65535"),
        ("1 10.0.0.250 10\n", 1, "past .255"),
        ("1 10.0.0.1 2\n2 10.0.0.9 1\n", 2, "already defined on line 1"),
        ("1 10.0.0.1 1\n2 10.0.0.1 1\n", 2, "already used on line 1"),
        ("1 10.0.0.1 1\n7 10.0.0.5 ALIAS\n", 2, "no line defines node 7"),
        ("1 10.0.0.1 many\n", 1, "neither a number nor ALIAS"),
        ("1 bad_host! 1\n", 1, "neither an IPv4 address nor a hostname"),
    ],
)
def test_errors_name_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        mapfile.parse(text, path="/etc/openmosix.map")
    assert info.value.line == line
    assert str(info.value).startswith(f"/etc/openmosix.map:{line}: ")
    assert words in str(info.value)


def test_node_id_from_ipv4_low_16_bits() -> None:
    assert mapfile.node_id_from_ipv4("192.168.100.11") == 25611
    assert mapfile.node_id_from_ipv4("192.168.10.220") == 0x0ADC
    with pytest.raises(ConfigError):
        mapfile.node_id_from_ipv4("10.0.0.0")


def test_showmap_golden() -> None:
    entries = mapfile.parse("25611 192.168.100.11 1\n25655 192.168.100.55 1\n")
    assert mapfile.format_showmap(0x640B, entries) == (
        "My Node-Id: 0x640b\n"
        "\n"
        "Base Node-Id Address          Count\n"
        "------------ ---------------- -----\n"
        "0x640b       192.168.100.11   1\n"
        "0x6437       192.168.100.55   1\n"
    )


def test_format_map_round_trips() -> None:
    entries = mapfile.parse("1 10.0.0.1 2\n3 10.0.0.100 2\n3 10.1.0.1 ALIAS\n")
    assert mapfile.parse(mapfile.format_map(entries)) == entries


def test_read_bounds_the_size_and_takes_only_regular_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ok = tmp_path / "ok.map"
    ok.write_bytes(b"1 10.0.0.1 2\n" + b"#" * (mapfile.MAX_MAP_BYTES - 14) + b"\n")
    assert mapfile.parse(mapfile.read(str(ok)))[0].count == 2  # exactly at the limit: fine
    big = tmp_path / "big.map"
    big.write_bytes(b"# comment\n" * (mapfile.MAX_MAP_BYTES // 10 + 1))
    with pytest.raises(ConfigError) as err:
        mapfile.read(str(big))
    assert str(err.value) == (
        f"{big}: cannot read the map file: larger than 1048576 bytes (1 MiB), the limit for a map; "
        "is it the right file?"
    )
    fifo = tmp_path / "fifo.map"
    os.mkfifo(fifo)  # nobody writes it: reading must not hang
    for path in ("/dev/zero", str(fifo), str(tmp_path)):
        with pytest.raises(ConfigError, match="cannot read the map file: not a regular file"):
            mapfile.read(path)
    with pytest.raises(ConfigError, match="No such file or directory"):
        mapfile.read(str(tmp_path / "nope.map"))
