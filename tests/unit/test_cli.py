"""The `tritonscale` command line."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from tests.builders import INVALID_CASES, make_inference_service, make_invalid
from tritonscale import __version__
from tritonscale.cli import main
from tritonscale.cli.run import run

ROOT = Path(__file__).parents[2]


def test_version() -> None:
    result = CliRunner().invoke(main, ["version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_render_prints_every_object_as_yaml() -> None:
    result = CliRunner().invoke(main, ["render", "-f", str(ROOT / "examples" / "gpu-spot.yaml")])
    assert result.exit_code == 0, result.output
    objects = list(yaml.safe_load_all(result.stdout))
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("ConfigMap", "resnet-router"),
        ("Service", "resnet-triton"),
        ("Deployment", "resnet-ondemand"),
        ("Deployment", "resnet-spot"),
        ("Deployment", "resnet-router"),
        ("Service", "resnet"),
        ("PodDisruptionBudget", "resnet-triton"),
        ("PodDisruptionBudget", "resnet-router"),
    ]
    assert "ownerReferences" not in result.stdout  # nothing to own them without a cluster
    assert "haproxy.cfg: |" in result.stdout  # the config stays readable


def test_render_several_files_and_skips_other_kinds(tmp_path: Path) -> None:
    mixed = tmp_path / "app.yaml"
    mixed.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: vision}\n---\n"
        + (ROOT / "examples" / "minimal.yaml").read_text()
    )
    result = CliRunner().invoke(
        main, ["render", "-f", str(mixed), "-f", str(ROOT / "examples" / "latency-autoscaled.yaml")]
    )
    assert result.exit_code == 0, result.output
    names = [o["metadata"]["name"] for o in yaml.safe_load_all(result.stdout)]
    assert "echo-router" in names and "bert-router" in names
    assert "skipped Namespace" in result.stderr


def test_render_reads_the_list_kubectl_get_prints(tmp_path: Path) -> None:
    good = next(
        d
        for d in yaml.safe_load_all((ROOT / "examples" / "minimal.yaml").read_text())
        if d["kind"] == "InferenceService"
    )
    bad = make_invalid({"spec.triton": {"resources": {"requests": {"cpu": "-1"}}}})
    listed = tmp_path / "all.yaml"
    listed.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [good, bad]}))
    result = CliRunner().invoke(main, ["render", "-f", str(listed)])
    assert result.exit_code == 2, result.output
    assert "spec.triton.resources.requests.cpu: invalid value '-1'" in result.stderr
    assert "document 1, item 2" in result.stderr
    listed.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [good]}))
    result = CliRunner().invoke(main, ["render", "-f", str(listed)])
    assert result.exit_code == 0, result.output
    assert "echo-router" in [o["metadata"]["name"] for o in yaml.safe_load_all(result.stdout)]


def test_render_invalid_exits_2_with_one_line_per_problem_naming_the_field(tmp_path: Path) -> None:
    cases = INVALID_CASES[:5]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all([make_invalid(overrides) for _, overrides, _ in cases]))
    result = CliRunner().invoke(main, ["render", "-f", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= len(cases)
    for line in lines:
        assert line.startswith(("spec.", "metadata.")), line
    for _, _, field in cases:
        assert any(line.startswith(f"{field}:") for line in lines), field


def test_render_refuses_values_of_the_wrong_type_as_the_api_server_does(tmp_path: Path) -> None:
    """The models alone would read "3" as 3; the API server refuses it (checked on a real one:
    a string for replicas, "yes" for a boolean, 1.5 for an int-or-string quantity, a number for
    an env value are refused; 3.0 for an integer and 2.0 for a quantity are accepted)."""
    service = make_inference_service("typed", "default", spec__replicas="3")
    service["spec"]["autoscaling"] = {"enabled": "yes", "latency": {"targetMilliseconds": 100}}
    service["spec"]["triton"] = {
        "image": 5,
        "resources": {"requests": {"cpu": 1.5, "memory": "1Gi"}},
        "env": [{"name": "A", "value": 3}],
    }
    path = tmp_path / "typed.yaml"
    path.write_text(yaml.safe_dump(service))
    result = CliRunner().invoke(main, ["render", "-f", str(path)])
    assert result.exit_code == 2, result.output
    assert sorted(result.stderr.strip().splitlines()) == sorted(
        f"{line} ({path}, document 1)"
        for line in (
            'spec.replicas: must be an integer, not a string ("3")',
            'spec.autoscaling.enabled: must be true or false, not a string ("yes")',
            "spec.triton.image: must be a string, not an integer (5)",
            "spec.triton.resources.requests.cpu: must be an integer or a string, not a number (1.5)",
            "spec.triton.env[0].value: must be a string, not an integer (3)",
        )
    )
    # A null is what the API server drops: the default holds.
    service["spec"] = {**service["spec"], "replicas": None, "triton": {"sharedMemory": None}}
    service["spec"].pop("autoscaling")
    path.write_text(yaml.safe_dump(service))
    result = CliRunner().invoke(main, ["render", "-f", str(path)])
    assert result.exit_code == 0, result.output
    assert "sizeLimit: 1Gi" in result.stdout
    # What the API server reads as whole numbers renders.
    service["spec"] = {**service["spec"], "replicas": 3.0, "autoscaling": {"enabled": True}}
    service["spec"]["triton"] = {"resources": {"requests": {"cpu": 2.0}}}
    path.write_text(yaml.safe_dump(service))
    result = CliRunner().invoke(main, ["render", "-f", str(path)])
    assert result.exit_code == 0, result.output


def test_render_reads_unquoted_times_and_dates_as_kubectl_does(tmp_path: Path) -> None:
    """`value: 12:30` and `value: 2024-01-01` are strings to kubectl (its YAML keeps them as
    written), so the API server takes them for a string field; read as YAML 1.1's base-60
    number (750) and date, render refused what kubectl applies."""
    service = make_inference_service("timed", "default")
    service["spec"]["triton"] = {
        "env": [{"name": "WINDOW", "value": "@TIME"}, {"name": "SINCE", "value": "@DAY"}]
    }
    text = yaml.safe_dump(service).replace("'@TIME'", "12:30").replace("'@DAY'", "2024-01-01")
    assert "value: 12:30" in text and "value: 2024-01-01" in text
    path = tmp_path / "timed.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["render", "-f", str(path)])
    assert result.exit_code == 0, result.output
    triton = next(d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in triton["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["WINDOW"] == "12:30" and env["SINCE"] == "2024-01-01"


def test_render_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("spec: [unclosed\n")
    result = CliRunner().invoke(main, ["render", "-f", str(path)])
    assert result.exit_code != 0 and "not valid YAML" in result.output
    result = CliRunner().invoke(main, ["render", "-f", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_render_reads_stdin() -> None:
    result = CliRunner().invoke(
        main, ["render", "-f", "-"], input=(ROOT / "examples" / "minimal.yaml").read_text()
    )
    assert result.exit_code == 0
    assert len(list(yaml.safe_load_all(result.stdout))) == 7


def test_render_takes_runs_network_policy_options_so_the_operator_is_let_in() -> None:
    """Rendered with the chart's options, the policies are the ones its operator applies: they
    let the operator's pods (in its namespace, with its labels) reach Triton and the routers."""
    example = str(ROOT / "examples" / "gpu-spot.yaml")

    def operator_peers(*options: str) -> list[dict[str, object]]:
        result = CliRunner().invoke(main, ["render", "-f", example, "--network-policies", *options])
        assert result.exit_code == 0, result.output
        policies = [o for o in yaml.safe_load_all(result.stdout) if o["kind"] == "NetworkPolicy"]
        assert {p["metadata"]["name"] for p in policies} == {"resnet-triton", "resnet-router"}
        return [
            peer
            for policy in policies
            for rule in policy["spec"]["ingress"]
            for peer in rule.get("from", [])
            if peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
            == "tritonscale"
        ]

    assert operator_peers() == []  # the operator outside the cluster: nothing lets it in
    peers = operator_peers(
        "--network-policy-operator-namespace", "tritonscale", "--network-policy-operator-label", "app=op"
    )
    assert len(peers) == 2 and all(peer["podSelector"] == {"matchLabels": {"app": "op"}} for peer in peers)
    refused = CliRunner().invoke(main, ["render", "-f", example, "--network-policy-operator-label", "bad"])
    assert refused.exit_code == 2 and "--network-policy-operator-label" in refused.output


def test_render_reads_a_directory_and_refuses_what_kubectl_would(tmp_path: Path) -> None:
    """-f DIR reads its manifests in name order, as kubectl does; an InferenceService of
    another apiVersion is a problem (kubectl: no matches for kind), not silently skipped; a
    file that is not text and input with no InferenceService are errors, not empty output."""
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "b.yaml").write_text((ROOT / "examples" / "minimal.yaml").read_text())
    (folder / "a.yml").write_text((ROOT / "examples" / "latency-autoscaled.yaml").read_text())
    (folder / "notes.txt").write_text("not a manifest")
    both = CliRunner().invoke(main, ["render", "-f", str(folder)])
    assert both.exit_code == 0, both.output
    names = [o["metadata"]["name"] for o in yaml.safe_load_all(both.stdout) if o["kind"] == "Deployment"]
    single = [
        o["metadata"]["name"]
        for path in ("latency-autoscaled.yaml", "minimal.yaml")
        for o in yaml.safe_load_all(
            CliRunner().invoke(main, ["render", "-f", str(ROOT / "examples" / path)]).stdout
        )
        if o["kind"] == "Deployment"
    ]
    assert names == single
    kserve = folder / "c.yaml"  # KServe's kind of the same name is not ours: skipped
    kserve.write_text("apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: k}\n")
    with_kserve = CliRunner().invoke(main, ["render", "-f", str(folder)])
    assert (
        with_kserve.exit_code == 0
        and "skipped InferenceService (serving.kserve.io/v1beta1)" in with_kserve.output
    )
    kserve.unlink()
    other_version = tmp_path / "v1.yaml"
    other_version.write_text("apiVersion: tritonscale.io/v1\nkind: InferenceService\nmetadata: {name: a}\n")
    refused = CliRunner().invoke(main, ["render", "-f", str(other_version)])
    assert (
        refused.exit_code == 2
        and "apiVersion: 'tritonscale.io/v1' is not tritonscale.io/v1alpha1" in refused.output
    )
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe")
    unreadable = CliRunner().invoke(main, ["render", "-f", str(binary)])
    assert unreadable.exit_code == 2 and "Invalid value for -f: cannot read" in unreadable.output
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    nothing = CliRunner().invoke(main, ["render", "-f", str(empty)])
    assert nothing.exit_code == 1 and "no InferenceService" in nothing.output
    bad_domain = CliRunner().invoke(main, ["render", "-f", str(folder), "--cluster-domain", "a b"])
    assert bad_domain.exit_code == 2 and "'--cluster-domain'" in bad_domain.output


def test_run_refuses_a_taken_port_and_unusable_credentials_naming_them(tmp_path: Path) -> None:
    """Before the operator starts: a port another process listens on is a usage error naming the
    flag; a kubeconfig that is not one is a one-line error, not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(
            main, ["run", "--listen-address", "127.0.0.1", "--health-port", "0", "--metrics-port", port]
        )
    assert result.exit_code == 2 and "Invalid value for --metrics-port" in result.output, result.output
    assert "Address already in use" in result.output
    for text in ("garbage: [", "hello", "[1, 2]"):  # not YAML; YAML but not a kubeconfig
        garbage = tmp_path / "kubeconfig"
        garbage.write_text(text)
        result = CliRunner().invoke(
            main, ["run", "--metrics-port", "0", "--health-port", "0", "--kubeconfig", str(garbage)]
        )
        assert result.exit_code == 1 and f"Error: kubeconfig {garbage}:" in result.output, (
            text,
            result.output,
        )
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_run_refuses_one_port_for_metrics_and_health_before_starting() -> None:
    result = CliRunner().invoke(main, ["run", "--metrics-port", "9000", "--health-port", "9000"])
    assert result.exit_code == 2
    assert "--metrics-port and --health-port must differ (both are 9000)" in result.stderr


def test_run_refuses_a_lease_name_kubernetes_would_refuse_naming_the_option() -> None:
    result = CliRunner().invoke(main, ["run", "--leader-election-name", "Team_B"])
    assert result.exit_code == 2
    assert "'--leader-election-name'" in result.stderr and "'Team_B' is not a DNS name" in result.stderr


def test_every_run_flag_is_settable_from_the_chart() -> None:
    """The chart is how users run the operator: each `tritonscale run` option has a value."""
    template = (Path(__file__).parents[2] / "charts/tritonscale/templates/deployment.yaml").read_text()
    flags = [
        name
        for param in run.params
        for name in (*param.opts, *param.secondary_opts)
        if name.startswith("--")
        and name not in ("--help", "--kubeconfig", "--read-triton-pods", "--read-routers")
    ]
    missing = [flag for flag in flags if f"- {flag}" not in template]
    assert missing == []


HEAVY = ("numpy", "rich", "matplotlib", "grpc", "tritonclient", "kopf", "kubernetes")


def _fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_help_and_run_help_load_none_of_the_heavy_libraries() -> None:
    probe = (
        "import sys\n"
        "from tritonscale.cli import main\n"
        "for args in (['--help'], ['run', '--help'], ['render', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    result = _fresh_python(probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert "Run the operator until interrupted." in result.stdout


def test_a_tools_command_without_the_tools_extra_says_how_to_install_it() -> None:
    # A meta path finder that hides `rich`, as on an image installed without the extra.
    probe = (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'rich':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from tritonscale.cli import main\n"
        "main(['simulate', '--help'])\n"
    )
    result = _fresh_python(probe)
    assert result.returncode == 1
    assert "pip install 'tritonscale[tools]'" in result.stderr
    assert "rich" in result.stderr


def test_run_refuses_a_prometheus_window_that_is_no_duration_naming_the_option() -> None:
    result = CliRunner().invoke(main, ["run", "--prometheus-window", "1 minute"])
    assert result.exit_code == 2
    assert (
        "--prometheus-window" in result.stderr and "'1 minute' is not a Prometheus duration" in result.stderr
    )
