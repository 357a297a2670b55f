from __future__ import annotations

from sepconv.cli import COMMANDS, build_parser, main


def test_help_of_every_command_renders(capsys) -> None:
    # argparse expands '%' in help strings: a stray one only fails when --help is asked for.
    for argv in [[], *([c] for c in COMMANDS)]:
        assert main([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


def test_every_command_is_registered() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(COMMANDS)
