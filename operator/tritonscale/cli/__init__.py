"""`tritonscale`: run the operator, render manifests, bench a Triton endpoint, simulate autoscalers.

Each command lives in its own module and is imported only when it runs, so `tritonscale --help`
and `tritonscale run` never load the user tools' dependencies (numpy, gRPC, rich, matplotlib),
which the operator image does not install.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass

import click

from tritonscale import __version__

TOOLS_EXTRA_MODULES = frozenset({"numpy", "rich", "matplotlib", "grpc", "tritonclient"})
"""Top-level modules that only the `tools` extra installs (or that it completes)."""


@dataclass(frozen=True)
class LazyCommand:
    module: str
    summary: str
    needs_tools: bool = False
    plugin: str | None = None
    """The distribution that provides the command through the `tritonscale.commands` entry point
    group (the operator package never imports it), and how to get it when it is missing."""


PLUGIN_GROUP = "tritonscale.commands"


COMMANDS: dict[str, LazyCommand] = {
    "run": LazyCommand("tritonscale.cli.run", "Run the operator until interrupted."),
    "render": LazyCommand("tritonscale.cli.render", "Print every object the operator would create."),
    "bench": LazyCommand("tritonscale.cli.bench", "Load-test a Triton endpoint.", needs_tools=True),
    "simulate": LazyCommand(
        "tritonscale.cli.simulate", "Replay a workload against autoscaling policies.", needs_tools=True
    ),
    "status": LazyCommand(
        "tritonscale.cli.status",
        "Show InferenceServices: replicas, latency vs target, scale decisions.",
        needs_tools=True,
    ),
    "demo": LazyCommand(
        "tritonscale_sandbox.demo",
        "Run the whole product on this machine from real components (needs the sandbox).",
        plugin="the sandbox (pip install -e ./sandbox from a clone of the repository; `make demo` does it all)",
    ),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on use; help lists them from `COMMANDS`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        lazy = COMMANDS.get(cmd_name)
        if lazy is None:
            return super().get_command(ctx, cmd_name)
        if lazy.plugin is not None:
            found = [ep for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP) if ep.name == cmd_name]
            if not found:
                raise click.ClickException(f"`tritonscale {cmd_name}` needs {lazy.plugin}")
            plugin = found[0].load()
            assert isinstance(plugin, click.Command)
            return plugin
        try:
            module = importlib.import_module(lazy.module)
        except ModuleNotFoundError as missing:
            if lazy.needs_tools and (missing.name or "").split(".")[0] in TOOLS_EXTRA_MODULES:
                raise click.ClickException(
                    f"`tritonscale {cmd_name}` needs the tools extra ({missing.name} is not installed): "
                    "pip install 'tritonscale[tools]'"
                ) from missing
            raise
        command = getattr(module, cmd_name)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, lazy.summary) for name, lazy in COMMANDS.items()]
        rows += [
            (name, command.get_short_help_str())
            for name, command in self.commands.items()
            if not command.hidden
        ]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tritonscale")
def main() -> None:
    """Tritonscale: latency-autoscaled NVIDIA Triton serving on Kubernetes."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"tritonscale {__version__}")
