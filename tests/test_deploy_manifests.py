"""Kubernetes manifests validate offline against the 1.37 schemas and use the service's own probes."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"


def _documents():
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield pytest.param(doc, id=f"{path.name}:{doc['kind']}")


@pytest.mark.parametrize("doc", list(_documents()))
def test_manifest_is_valid_kubernetes(doc):
    kubernetes_validate.validate(doc, "1.37.0", strict=True)


def test_deployment_probes_use_readyz_and_healthz():
    doc = yaml.safe_load((K8S / "deployment.yaml").read_text())
    container = doc["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert doc["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_hpa_scales_the_deployment():
    hpa = yaml.safe_load((K8S / "hpa.yaml").read_text())
    assert hpa["spec"]["scaleTargetRef"]["name"] == "cardsense"
    assert hpa["spec"]["minReplicas"] >= 2


def test_batch_job_shards_by_completion_index():
    job = yaml.safe_load((K8S / "batch-job.yaml").read_text())
    assert job["spec"]["completionMode"] == "Indexed"
    n = job["spec"]["completions"]
    command = " ".join(job["spec"]["template"]["spec"]["containers"][0]["args"])
    assert f'--shard "${{JOB_COMPLETION_INDEX}}/{n}"' in command
