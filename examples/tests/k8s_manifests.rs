//! The Kubernetes manifests in `examples/k8s/` parse, and say what the README says: a
//! headless Service with a named port, its Deployment, and a client that discovers the
//! pods through that Service's SRV records.

use serde_yaml::Value;

fn docs(file: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("k8s")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_server_manifest_is_a_headless_service_with_a_named_port_and_its_deployment() {
    let docs = docs("echo-server.yaml");
    assert_eq!(docs.len(), 2);
    let svc = kind(&docs, "Service");
    assert_eq!(svc["metadata"]["name"], "echo");
    assert_eq!(svc["spec"]["clusterIP"], "None", "headless");
    let port = &svc["spec"]["ports"][0];
    assert_eq!(port["name"], "drpc");
    assert_eq!(port["protocol"], "TCP");
    assert_eq!(port["port"], 8080);
    let deploy = kind(&docs, "Deployment");
    assert_eq!(
        deploy["spec"]["selector"]["matchLabels"],
        svc["spec"]["selector"]
    );
    let pod = &deploy["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"], svc["spec"]["selector"]);
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["args"][0], "echo-server");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    // Readiness is the server's own /readyz (503 from the start of a drain), and the grace
    // period covers the drain's delay and timeout.
    let probe = &container["readinessProbe"]["httpGet"];
    assert_eq!(probe["path"], "/readyz");
    let health = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == probe["port"])
        .expect("the probe's port is a named container port");
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let flag = |name: &str| -> &str {
        let i = args
            .iter()
            .position(|a| *a == name)
            .unwrap_or_else(|| panic!("no {name}"));
        args[i + 1]
    };
    assert!(
        flag("--health-addr").ends_with(&format!(":{}", health["containerPort"].as_u64().unwrap())),
        "--health-addr serves the probed port"
    );
    let delay: f64 = flag("--drain-delay").parse().unwrap();
    let timeout: f64 = flag("--drain-timeout").parse().unwrap();
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_f64()
        .unwrap();
    assert!(
        grace > delay + timeout,
        "grace {grace} <= {delay} + {timeout}"
    );
    assert!(
        container["image"].as_str().unwrap().contains("REGISTRY/"),
        "placeholder image"
    );
}

#[test]
fn the_client_manifest_discovers_the_pods_through_srv_records() {
    let docs = docs("echo-client.yaml");
    assert_eq!(docs.len(), 1);
    let deploy = kind(&docs, "Deployment");
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    let script = container["args"][0].as_str().unwrap();
    assert!(script.contains("echo-client"), "{script}");
    let resolve = script
        .split_whitespace()
        .skip_while(|w| *w != "--resolve")
        .nth(1)
        .expect("--resolve VALUE");
    match drpc_examples::balance::parse(resolve).unwrap() {
        drpc_examples::balance::Discovery::Dns { name, port, .. } => {
            assert_eq!(name, "_drpc._tcp.echo.default.svc.cluster.local");
            assert_eq!(port, None, "SRV");
        }
        other => panic!("not DNS discovery: {other:?}"),
    }
}
