//! The deployment files in `deploy/` stay true to the daemon: every file parses, every
//! `SSPR_FLEET_*` variable and settings key they (and the docs) name is a setting the daemon's own
//! loader accepts with the value given, and the pieces of each deployment agree with each other
//! (ports, probe paths, the `--config` file, the master key file, shutdown timeouts).

#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use serde::Deserialize;
use sspr_fleet::settings::{DEFAULT_CONFIG, ENV_PREFIX, Settings};
use yaml_serde::Value as Yaml;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Parsers
// ---------------------------------------------------------------------------------------------

/// Every document of a YAML file.
fn yaml_docs(path: &Path) -> Vec<Yaml> {
    let text = read(path);
    let mut docs = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(&text) {
        let mut value =
            Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
        value.apply_merge().unwrap();
        if !value.is_null() {
            docs.push(value);
        }
    }
    assert!(!docs.is_empty(), "{}: no YAML document", path.display());
    docs
}

fn yaml_str<'a>(value: &'a Yaml, path: &[&str]) -> Option<&'a str> {
    yaml_at(value, path)?.as_str()
}

fn yaml_at<'a>(value: &'a Yaml, path: &[&str]) -> Option<&'a Yaml> {
    path.iter().try_fold(value, |v, key| v.get(*key))
}

/// A scalar as the text an environment variable would carry.
fn yaml_scalar_text(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    line: usize,
    keyword: String,
    args: String,
}

const DOCKERFILE_INSTRUCTIONS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

fn parse_dockerfile(text: &str) -> Result<Vec<Instruction>, String> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_none()) {
            continue;
        }
        let (start, mut joined) = current.take().unwrap_or((n + 1, String::new()));
        if let Some(head) = line.strip_suffix('\\') {
            joined.push_str(head);
            joined.push(' ');
            current = Some((start, joined));
            continue;
        }
        joined.push_str(line);
        let (keyword, args) = joined.split_once(char::is_whitespace).unwrap_or((&joined, ""));
        if !DOCKERFILE_INSTRUCTIONS.contains(&keyword) {
            return Err(format!("line {start}: unknown instruction {keyword:?}"));
        }
        if args.trim().is_empty() {
            return Err(format!("line {start}: {keyword} without arguments"));
        }
        out.push(Instruction { line: start, keyword: keyword.into(), args: args.trim().into() });
    }
    if current.is_some() {
        return Err("the file ends inside a continued line".into());
    }
    if out.first().map(|i| i.keyword.as_str()) != Some("FROM") {
        return Err("the first instruction is not FROM".into());
    }
    Ok(out)
}

/// `ENV A=1 B=2` pairs (no quoting is used in our Dockerfile, and none is accepted).
fn dockerfile_env(instructions: &[Instruction]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in instructions.iter().filter(|i| i.keyword == "ENV") {
        for pair in i.args.split_whitespace() {
            let (k, v) = pair.split_once('=').unwrap_or_else(|| {
                panic!("Dockerfile line {}: ENV {pair:?} is not KEY=VALUE", i.line)
            });
            assert!(!v.contains(['"', '\'']), "Dockerfile line {}: quoted ENV value", i.line);
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    out
}

/// A systemd unit: section -> directive -> values (a directive may repeat).
type Unit = BTreeMap<String, Vec<(String, String)>>;

/// The directives our unit may use, by section: a misspelt directive is only a warning in the
/// journal for systemd, so it is an error here.
const UNIT_DIRECTIVES: &[(&str, &[&str])] = &[
    ("Unit", &["Description", "Documentation", "Wants", "After", "Requires", "Before"]),
    (
        "Service",
        &[
            "Type",
            "User",
            "Group",
            "DynamicUser",
            "ExecStart",
            "ExecReload",
            "StateDirectory",
            "StateDirectoryMode",
            "WorkingDirectory",
            "Environment",
            "EnvironmentFile",
            "LoadCredential",
            "KillSignal",
            "TimeoutStopSec",
            "TimeoutStartSec",
            "Restart",
            "RestartSec",
            "RestartPreventExitStatus",
            "NoNewPrivileges",
            "ProtectSystem",
            "ProtectHome",
            "PrivateTmp",
            "PrivateDevices",
            "ProtectKernelTunables",
            "ProtectKernelModules",
            "ProtectKernelLogs",
            "ProtectControlGroups",
            "ProtectClock",
            "ProtectHostname",
            "ProtectProc",
            "RestrictAddressFamilies",
            "RestrictNamespaces",
            "LockPersonality",
            "MemoryDenyWriteExecute",
            "RestrictRealtime",
            "RestrictSUIDSGID",
            "RemoveIPC",
            "SystemCallFilter",
            "SystemCallErrorNumber",
            "SystemCallArchitectures",
            "CapabilityBoundingSet",
            "AmbientCapabilities",
            "UMask",
            "LimitNOFILE",
        ],
    ),
    ("Install", &["WantedBy"]),
];

fn parse_unit(text: &str) -> Result<Unit, String> {
    let mut unit = Unit::new();
    let mut section: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.ends_with('\\') {
            return Err(format!("line {}: continued lines are not used here", n + 1));
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if !UNIT_DIRECTIVES.iter().any(|(s, _)| *s == name) {
                return Err(format!("line {}: unknown section [{name}]", n + 1));
            }
            section = Some(name.to_owned());
            unit.entry(name.to_owned()).or_default();
            continue;
        }
        let Some(section) = &section else {
            return Err(format!("line {}: directive outside a section", n + 1));
        };
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: not Key=Value: {line:?}", n + 1));
        };
        let known = UNIT_DIRECTIVES.iter().find(|(s, _)| s == section).map(|(_, d)| *d);
        if !known.unwrap_or_default().contains(&key) {
            return Err(format!("line {}: unknown directive {key} in [{section}]", n + 1));
        }
        unit.entry(section.clone()).or_default().push((key.to_owned(), value.to_owned()));
    }
    Ok(unit)
}

fn unit_values<'a>(unit: &'a Unit, section: &str, key: &str) -> Vec<&'a str> {
    unit.get(section)
        .map(|d| d.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect())
        .unwrap_or_default()
}

fn unit_value<'a>(unit: &'a Unit, section: &str, key: &str) -> &'a str {
    let values = unit_values(unit, section, key);
    assert_eq!(values.len(), 1, "[{section}] {key}: expected exactly one, got {values:?}");
    values[0]
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// Replaces `${VAR...}` interpolations (docker compose) with a plain word.
fn uninterpolate(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("unterminated ${") + start;
        out.push_str("interpolated");
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The settings key of an `SSPR_FLEET_*` variable: `SSPR_FLEET_ENGINE__RUN_JOBS` -> `engine.run_jobs`.
fn key_of(var: &str) -> String {
    var[ENV_PREFIX.len()..].to_ascii_lowercase().replace("__", ".")
}

/// The default of a key, from the embedded defaults.
fn default_of(key: &str) -> Option<toml::Value> {
    let defaults: toml::Table = toml::from_str(DEFAULT_CONFIG).unwrap();
    let mut value = toml::Value::Table(defaults);
    for part in key.split('.') {
        value = value.get(part)?.clone();
    }
    Some(value)
}

/// A valid value for a key when a file names the variable without giving one (docs, values
/// taken from a Secret): its default, or a well-formed stand-in for keys without one.
fn sample_value(key: &str) -> String {
    match key {
        "master_key" => base64_of_32_bytes(),
        "master_key_file" => "/run/secrets/sspr-fleet-master-key".into(),
        _ => match default_of(key) {
            Some(toml::Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => "no-default".into(),
        },
    }
}

fn base64_of_32_bytes() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

/// Checks that an `SSPR_FLEET_*` variable is a setting the daemon has, and that `value` is
/// valid for it. Three ways through the daemon's own loader:
/// 1. the key, written in a settings file, is accepted: every level of `Settings` denies
///    unknown fields, so a misspelt key fails here (for environment variables the loader only
///    warns about an unknown top-level name, to let unrelated variables be);
/// 2. the variable with the value loads (the value is valid for the setting);
/// 3. when the value differs from the default, the effective settings differ from the
///    defaults' (the variable reached the setting).
fn check_setting_var(var: &str, value: &str) -> Result<(), String> {
    let key = key_of(var);
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(format!("{var}: not a setting name"));
    }
    // 1.
    let parsed: figment::value::Value =
        value.parse().unwrap_or_else(|e: std::convert::Infallible| match e {});
    let mut table = toml::Value::try_from(&parsed).map_err(|e| format!("{var}: {e}"))?;
    for part in key.rsplit('.') {
        let mut t = toml::Table::new();
        t.insert(part.to_owned(), table);
        table = toml::Value::Table(t);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("one-key.toml");
    std::fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
    Settings::load_from(Some(&file), Vec::new())
        .map_err(|e| format!("{var} (key {key}) is not a setting: {e}"))?;
    // 2.
    let with = Settings::load_from(None, vec![(var.to_owned(), value.to_owned())])
        .map_err(|e| format!("{var}={value:?} does not load: {e}"))?;
    // 3.
    let default = default_of(&key).map(|v| match v {
        toml::Value::String(s) => s,
        other => other.to_string(),
    });
    if default.as_deref() != Some(value) {
        let base = Settings::load_from(None, Vec::new()).unwrap();
        if with.to_masked_toml() == base.to_masked_toml() {
            return Err(format!("{var}={value:?} changed nothing in the effective settings"));
        }
    }
    Ok(())
}

/// Every `SSPR_FLEET_*` name written in a text.
fn setting_vars_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(ENV_PREFIX) {
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..len];
        // `SSPR_FLEET_<KEY>` and `SSPR_FLEET_*` are patterns, not names; the test suite's own
        // variables are not settings; `$SSPR_FLEET_KEY` in a shell example is the reader's own
        // shell variable (an API key, say), which the daemon never reads.
        let before = &rest[..at];
        let expanded = before.ends_with('$') || before.ends_with("${");
        if name.len() > ENV_PREFIX.len()
            && !name.ends_with('_')
            && !name.starts_with("SSPR_FLEET_TEST_")
            && !expanded
        {
            out.insert(name.to_owned());
        }
        rest = &tail[len..];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The files of each deployment
// ---------------------------------------------------------------------------------------------

/// The environment variables each deployment sets, with their values (a value from a Secret is
/// looked up in secret.example.yaml).
fn deployment_envs() -> BTreeMap<&'static str, Vec<(String, String)>> {
    let mut out = BTreeMap::new();
    let docker = parse_dockerfile(&read(&deploy().join("Dockerfile"))).unwrap();
    out.insert("Dockerfile", dockerfile_env(&docker));
    for (service, env) in compose_envs() {
        out.insert(service, env);
    }
    let unit = parse_unit(&read(&deploy().join("systemd/sspr-fleet.service"))).unwrap();
    out.insert("systemd", systemd_env(&unit));
    out.insert("kubernetes", kubernetes_env());
    out
}

fn compose() -> Yaml {
    yaml_docs(&deploy().join("docker-compose.yml")).remove(0)
}

fn compose_sspr_services(compose: &Yaml) -> Vec<(&'static str, &Yaml)> {
    ["sspr-fleet-a", "sspr-fleet-b"]
        .into_iter()
        .map(|name| {
            (name, yaml_at(compose, &["services", name]).unwrap_or_else(|| panic!("no {name}")))
        })
        .collect()
}

fn compose_envs() -> Vec<(&'static str, Vec<(String, String)>)> {
    let compose = compose();
    compose_sspr_services(&compose)
        .into_iter()
        .map(|(name, service)| {
            let env = match service.get("environment") {
                Some(Yaml::Mapping(m)) => m
                    .iter()
                    .map(|(k, v)| {
                        (k.as_str().unwrap().to_owned(), uninterpolate(&yaml_scalar_text(v)))
                    })
                    .collect(),
                Some(Yaml::Sequence(items)) => items
                    .iter()
                    .map(|i| {
                        let (k, v) = i.as_str().unwrap().split_once('=').unwrap();
                        (k.to_owned(), uninterpolate(v))
                    })
                    .collect(),
                other => panic!("{name}: environment is {other:?}"),
            };
            (name, env)
        })
        .collect()
}

fn systemd_env(unit: &Unit) -> Vec<(String, String)> {
    unit_values(unit, "Service", "Environment")
        .into_iter()
        .map(|v| {
            let v = v.trim_matches('"');
            let (k, v) = v.split_once('=').unwrap();
            // %d is the unit's credentials directory.
            (k.to_owned(), v.replace("%d", "/run/credentials/sspr-fleet.service"))
        })
        .collect()
}

fn k8s(file: &str) -> Vec<Yaml> {
    yaml_docs(&deploy().join("kubernetes").join(file))
}

fn k8s_container() -> Yaml {
    let deployment = k8s("deployment.yaml").remove(0);
    let containers = yaml_at(&deployment, &["spec", "template", "spec", "containers"])
        .and_then(Yaml::as_sequence)
        .unwrap();
    assert_eq!(containers.len(), 1);
    containers[0].clone()
}

/// `stringData` of the example Secrets, by Secret name.
fn k8s_secrets() -> BTreeMap<String, BTreeMap<String, String>> {
    k8s("secret.example.yaml")
        .iter()
        .map(|doc| {
            assert_eq!(yaml_str(doc, &["kind"]), Some("Secret"));
            let data = doc
                .get("stringData")
                .and_then(Yaml::as_mapping)
                .unwrap()
                .iter()
                .map(|(k, v)| (k.as_str().unwrap().to_owned(), yaml_scalar_text(v)))
                .collect();
            (yaml_str(doc, &["metadata", "name"]).unwrap().to_owned(), data)
        })
        .collect()
}

fn kubernetes_env() -> Vec<(String, String)> {
    let secrets = k8s_secrets();
    let container = k8s_container();
    container
        .get("env")
        .and_then(Yaml::as_sequence)
        .unwrap()
        .iter()
        .map(|e| {
            let name = yaml_str(e, &["name"]).unwrap().to_owned();
            let value = match (e.get("value"), yaml_at(e, &["valueFrom", "secretKeyRef"])) {
                (Some(v), None) => yaml_scalar_text(v),
                (None, Some(r)) => {
                    let secret = yaml_str(r, &["name"]).unwrap();
                    let key = yaml_str(r, &["key"]).unwrap();
                    secrets
                        .get(secret)
                        .and_then(|s| s.get(key))
                        .unwrap_or_else(|| panic!("{name}: no Secret {secret} with key {key}"))
                        .clone()
                }
                _ => panic!("{name}: neither value nor secretKeyRef"),
            };
            (name, value)
        })
        .collect()
}

/// The settings file in the ConfigMap, written out.
fn configmap_toml(dir: &Path) -> PathBuf {
    let cm = k8s("configmap.yaml").remove(0);
    let text = yaml_str(&cm, &["data", "sspr-fleet.toml"]).unwrap();
    let file = dir.join("sspr-fleet.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn sspr_only(env: &[(String, String)]) -> Vec<(String, String)> {
    env.iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).cloned().collect()
}

fn port_of(addr: &std::net::SocketAddr) -> u16 {
    addr.port()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn every_file_in_deploy_parses() {
    let mut seen = 0;
    for path in files_under(&deploy()) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = read(&path);
        let rel = path.strip_prefix(repo()).unwrap().display().to_string();
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => {
                let docs = yaml_docs(&path);
                if rel.contains("kubernetes") {
                    for doc in &docs {
                        for field in [&["apiVersion"][..], &["kind"], &["metadata", "name"]] {
                            assert!(yaml_str(doc, field).is_some(), "{rel}: no {field:?}");
                        }
                    }
                }
            }
            Some("toml") => {
                text.parse::<toml::Table>().unwrap_or_else(|e| panic!("{rel}: {e}"));
            }
            Some("json") => {
                serde_json::from_str::<serde_json::Value>(&text)
                    .unwrap_or_else(|e| panic!("{rel}: {e}"));
            }
            Some("service") => {
                parse_unit(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
            }
            _ if name == "Dockerfile" => {
                parse_dockerfile(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
            }
            _ => panic!("{rel}: no check for this kind of file; add one to this test"),
        }
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} files in deploy/");
    // The ConfigMap's settings file is TOML inside YAML.
    let dir = tempfile::tempdir().unwrap();
    read(&configmap_toml(dir.path())).parse::<toml::Table>().unwrap();
}

#[test]
fn the_parsers_reject_what_they_should() {
    assert!(parse_dockerfile("FROM x\nRUNN true\n").is_err());
    assert!(parse_dockerfile("RUN true\n").is_err());
    assert!(parse_dockerfile("FROM x\nRUN a \\\n").is_err());
    assert!(parse_unit("[Service]\nProtectHme=yes\n").is_err());
    assert!(parse_unit("[Service]\nNoNewPrivileges\n").is_err());
    assert!(parse_unit("[Servce]\nType=simple\n").is_err());
    assert!(parse_unit("[Service]\nType=simple\n").is_ok());
}

#[test]
fn the_settings_check_fails_for_names_that_are_not_settings() {
    // A misspelt top-level variable is only warned about by the daemon, a misspelt section key
    // stops it; the check catches both, and a bad value too.
    for (var, value) in [
        ("SSPR_FLEET_LISTN", "0.0.0.0:8080"),
        ("SSPR_FLEET_ENGINE__WORKRES", "4"),
        ("SSPR_FLEET_ENGINES__WORKERS", "4"),
        ("SSPR_FLEET_ENGINE_WORKERS", "4"),
        ("SSPR_FLEET_LISTEN", "0.0.0.0"),
        ("SSPR_FLEET_ENGINE__RUN_JOBS", "maybe"),
    ] {
        assert!(check_setting_var(var, value).is_err(), "{var}={value} passed");
    }
    check_setting_var("SSPR_FLEET_ENGINE__RUN_JOBS", "false").unwrap();
    check_setting_var("SSPR_FLEET_MASTER_KEY_FILE", "/run/secrets/k").unwrap();
}

#[test]
fn every_setting_variable_named_in_deploy_and_docs_exists() {
    let mut sources: Vec<PathBuf> = files_under(&deploy());
    sources.extend(
        files_under(&repo().join("docs"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "md")),
    );
    sources.push(repo().join("README.md"));
    // Values set by the deployment files, checked as given.
    let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, env) in deployment_envs() {
        for (k, v) in sspr_only(&env) {
            values.entry(k).or_default().insert(v);
        }
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for source in &sources {
        for var in setting_vars_in(&read(source)) {
            let given = values.get(&var).cloned().unwrap_or_default();
            let candidates: Vec<String> = if given.is_empty() {
                vec![sample_value(&key_of(&var))]
            } else {
                given.into_iter().collect()
            };
            for value in candidates {
                checked += 1;
                if let Err(e) = check_setting_var(&var, &value) {
                    let rel = source.strip_prefix(repo()).unwrap().display().to_string();
                    failures.push(format!("{rel}: {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 20, "only {checked} variables found");
}

#[test]
fn each_deployment_loads_with_its_files_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let example = deploy().join("sspr-fleet.example.toml");
    let configmap = configmap_toml(dir.path());
    for (deployment, env) in deployment_envs() {
        // systemd is given the example file (the unit's --config); Kubernetes the ConfigMap's.
        let file = match deployment {
            "systemd" => Some(example.as_path()),
            "kubernetes" => Some(configmap.as_path()),
            _ => None,
        };
        let settings = Settings::load_from(file, sspr_only(&env))
            .unwrap_or_else(|e| panic!("{deployment}: {e}"));
        assert_eq!(settings.listen.port(), 8080, "{deployment}");
        assert!(
            settings.master_key.is_some()
                || settings.master_key_file.is_some()
                || deployment == "Dockerfile",
            "{deployment}: no master key configured"
        );
    }
}

#[test]
fn the_dockerfile_runs_serve_as_a_non_root_user_on_the_listen_port() {
    let docker = parse_dockerfile(&read(&deploy().join("Dockerfile"))).unwrap();
    let last = |kw: &str| {
        docker.iter().rev().find(|i| i.keyword == kw).unwrap_or_else(|| panic!("no {kw}"))
    };
    let froms: Vec<&str> =
        docker.iter().filter(|i| i.keyword == "FROM").map(|i| i.args.as_str()).collect();
    assert!(froms[0].starts_with("rust:1-bookworm"), "{froms:?}");
    assert!(froms.last().unwrap().starts_with("debian:bookworm-slim"), "{froms:?}");
    assert!(
        docker.iter().any(|i| i.keyword == "RUN"
            && i.args.contains("cargo build --release --locked -p sspr-fleet")),
        "no locked release build"
    );
    let exec = |i: &Instruction| -> Vec<String> {
        serde_json::from_str(&i.args)
            .unwrap_or_else(|e| panic!("line {}: not exec form: {e}", i.line))
    };
    assert_eq!(exec(last("ENTRYPOINT")), ["sspr-fleet"]);
    assert_eq!(exec(last("CMD")), ["serve"]);
    let user = last("USER").args.split(':').next().unwrap().to_owned();
    assert!(user.parse::<u32>().is_ok_and(|uid| uid >= 1000), "USER {user}");
    let env: BTreeMap<String, String> = dockerfile_env(&docker).into_iter().collect();
    let listen: std::net::SocketAddr = env["SSPR_FLEET_LISTEN"].parse().unwrap();
    assert!(listen.ip().is_unspecified(), "a container must listen on every interface");
    assert_eq!(last("EXPOSE").args, port_of(&listen).to_string());
    let health = last("HEALTHCHECK");
    assert!(
        health.args.contains(&format!("/dev/tcp/127.0.0.1/{}", listen.port()))
            && health.args.contains("/healthz"),
        "the health check must ask /healthz on the listen port: {}",
        health.args
    );
    let health_cmd = health.args.split_once("CMD").unwrap().1.trim();
    serde_json::from_str::<Vec<String>>(health_cmd).unwrap();
}

#[test]
fn the_systemd_unit_is_hardened_and_consistent() {
    let unit = parse_unit(&read(&deploy().join("systemd/sspr-fleet.service"))).unwrap();
    assert_eq!(unit_value(&unit, "Service", "Type"), "simple");
    let exec: Vec<&str> = unit_value(&unit, "Service", "ExecStart").split_whitespace().collect();
    assert_eq!(exec[..2], ["/usr/local/bin/sspr-fleet", "serve"]);
    let config = exec.iter().position(|a| *a == "--config").map(|i| exec[i + 1]).unwrap();
    assert_eq!(config, "/etc/sspr-fleet/sspr-fleet.toml");
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        ("UMask", "0077"),
        ("Restart", "on-failure"),
        ("StateDirectory", "sspr-fleet"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(unit_value(&unit, "Service", key), value, "{key}");
    }
    assert!(
        !unit_values(&unit, "Service", "User").is_empty()
            || unit_value(&unit, "Service", "DynamicUser") == "yes"
    );
    // The master key comes in as a credential, and the variable names that credential.
    let (cred, _) = unit_value(&unit, "Service", "LoadCredential").split_once(':').unwrap();
    let env: BTreeMap<String, String> = unit_values(&unit, "Service", "Environment")
        .into_iter()
        .map(|v| {
            let (k, v) = v.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    assert_eq!(env["SSPR_FLEET_MASTER_KEY_FILE"], format!("%d/{cred}"));
    // Stopping waits longer than the daemon's own grace period.
    let settings =
        Settings::load_from(Some(&deploy().join("sspr-fleet.example.toml")), systemd_env(&unit))
            .unwrap();
    let stop: u64 = unit_value(&unit, "Service", "TimeoutStopSec").parse().unwrap();
    assert!(stop > settings.api.shutdown_timeout_secs, "TimeoutStopSec {stop}");
}

#[test]
fn compose_replicas_share_the_database_and_key_and_wait_for_postgres() {
    let compose = compose();
    let services = compose.get("services").and_then(Yaml::as_mapping).unwrap();
    let declared_secrets = compose.get("secrets").and_then(Yaml::as_mapping).unwrap();
    let postgres = yaml_at(&compose, &["services", "postgres"]).unwrap();
    assert!(yaml_str(postgres, &["image"]).unwrap().starts_with("postgres:16"));
    let test = yaml_at(postgres, &["healthcheck", "test"]).unwrap();
    assert!(format!("{test:?}").contains("pg_isready"));
    assert!(postgres.get("volumes").is_some());
    let collector_config = yaml_docs(&deploy().join("otel-collector.yaml")).remove(0);
    let otlp_endpoint =
        yaml_str(&collector_config, &["receivers", "otlp", "protocols", "http", "endpoint"])
            .unwrap();
    let otlp_port = otlp_endpoint.rsplit(':').next().unwrap();
    let envs: BTreeMap<&str, Vec<(String, String)>> = compose_envs().into_iter().collect();
    let mut database_urls = BTreeSet::new();
    let mut key_files = BTreeSet::new();
    for (name, service) in compose_sspr_services(&compose) {
        let env: BTreeMap<&str, &str> =
            envs[name].iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let settings = Settings::load_from(None, sspr_only(&envs[name])).unwrap();
        database_urls.insert(env["SSPR_FLEET_DATABASE_URL"].to_owned());
        // The master key file is a declared compose secret, given to this service.
        let key_file = env["SSPR_FLEET_MASTER_KEY_FILE"];
        let secret = key_file.strip_prefix("/run/secrets/").unwrap();
        assert!(declared_secrets.contains_key(secret), "{name}: secret {secret} not declared");
        let given: Vec<&str> = service
            .get("secrets")
            .and_then(Yaml::as_sequence)
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert!(given.contains(&secret), "{name}: secret {secret} not given");
        key_files.insert(key_file.to_owned());
        // The published port reaches the listen port.
        let ports = service.get("ports").and_then(Yaml::as_sequence).unwrap();
        for port in ports {
            let container = port.as_str().unwrap().rsplit(':').next().unwrap();
            assert_eq!(container, settings.listen.port().to_string(), "{name}: {port:?}");
        }
        // Postgres must be healthy first.
        assert_eq!(
            yaml_str(service, &["depends_on", "postgres", "condition"]),
            Some("service_healthy"),
            "{name}"
        );
        // Traces go to the collector's OTLP/HTTP port.
        let otel = env["OTEL_EXPORTER_OTLP_ENDPOINT"];
        let host_port = otel.strip_prefix("http://").unwrap();
        let (host, port) = host_port.split_once(':').unwrap();
        assert!(services.contains_key(host), "{name}: no service {host}");
        assert_eq!(port, otlp_port, "{name}");
        let grace = yaml_str(service, &["stop_grace_period"]).unwrap();
        let grace: u64 = grace.strip_suffix('s').unwrap().parse().unwrap();
        assert!(grace > settings.api.shutdown_timeout_secs, "{name}: stop_grace_period");
    }
    assert_eq!(database_urls.len(), 1, "the replicas must share one database");
    assert_eq!(key_files.len(), 1, "the replicas must share one master key");
    assert!(database_urls.iter().all(|u| u.starts_with("postgres://")));
}

#[test]
fn kubernetes_ports_probes_config_and_key_agree() {
    let deployment = k8s("deployment.yaml").remove(0);
    let pod = yaml_at(&deployment, &["spec", "template"]).unwrap();
    let container = k8s_container();
    let labels = yaml_at(pod, &["metadata", "labels"]).unwrap().clone();
    let matches = |selector: &Yaml| {
        selector
            .as_mapping()
            .unwrap()
            .iter()
            .all(|(k, v)| labels.get(k.as_str().unwrap()) == Some(v))
    };
    assert_eq!(yaml_at(&deployment, &["spec", "replicas"]).and_then(Yaml::as_u64), Some(2));
    assert!(matches(yaml_at(&deployment, &["spec", "selector", "matchLabels"]).unwrap()));

    // Security.
    let pod_sc = yaml_at(pod, &["spec", "securityContext"]).unwrap();
    assert_eq!(pod_sc.get("runAsNonRoot").and_then(Yaml::as_bool), Some(true));
    assert_eq!(yaml_str(pod_sc, &["seccompProfile", "type"]), Some("RuntimeDefault"));
    let sc = container.get("securityContext").unwrap();
    assert_eq!(sc.get("readOnlyRootFilesystem").and_then(Yaml::as_bool), Some(true));
    assert_eq!(sc.get("allowPrivilegeEscalation").and_then(Yaml::as_bool), Some(false));
    assert_eq!(
        format!("{:?}", yaml_at(sc, &["capabilities", "drop"]).unwrap()),
        format!("{:?}", Yaml::Sequence(vec![Yaml::String("ALL".into())]))
    );

    // Settings: the ConfigMap file through --config, the environment, the mounted key.
    let dir = tempfile::tempdir().unwrap();
    let settings =
        Settings::load_from(Some(&configmap_toml(dir.path())), sspr_only(&kubernetes_env()))
            .unwrap();
    let args: Vec<String> = container
        .get("args")
        .and_then(Yaml::as_sequence)
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(args[0], "serve");
    let config_path =
        args.iter().position(|a| a == "--config").map(|i| args[i + 1].clone()).unwrap();
    let volumes = yaml_at(pod, &["spec", "volumes"]).and_then(Yaml::as_sequence).unwrap();
    let mounts = container.get("volumeMounts").and_then(Yaml::as_sequence).unwrap();
    // The file a path inside a mount comes from: (volume, item path).
    let source_of = |path: &str| -> (Yaml, String) {
        let mount = mounts
            .iter()
            .find(|m| path.starts_with(&format!("{}/", yaml_str(m, &["mountPath"]).unwrap())))
            .unwrap_or_else(|| panic!("{path} is in no volume mount"));
        let name = yaml_str(mount, &["name"]).unwrap();
        let volume = volumes.iter().find(|v| yaml_str(v, &["name"]) == Some(name)).unwrap();
        let item = path[yaml_str(mount, &["mountPath"]).unwrap().len() + 1..].to_owned();
        (volume.clone(), item)
    };
    let (volume, item) = source_of(&config_path);
    let configmap = k8s("configmap.yaml").remove(0);
    assert_eq!(
        yaml_str(&volume, &["configMap", "name"]),
        yaml_str(&configmap, &["metadata", "name"])
    );
    let items = yaml_at(&volume, &["configMap", "items"]).and_then(Yaml::as_sequence).unwrap();
    let key = items
        .iter()
        .find(|i| yaml_str(i, &["path"]) == Some(&item))
        .and_then(|i| yaml_str(i, &["key"]))
        .unwrap();
    assert!(yaml_at(&configmap, &["data", key]).is_some(), "ConfigMap has no {key}");

    let key_file = settings.master_key_file.clone().unwrap();
    let (volume, item) = source_of(key_file.to_str().unwrap());
    let secret = yaml_str(&volume, &["secret", "secretName"]).unwrap();
    let items = yaml_at(&volume, &["secret", "items"]).and_then(Yaml::as_sequence).unwrap();
    let key = items
        .iter()
        .find(|i| yaml_str(i, &["path"]) == Some(&item))
        .and_then(|i| yaml_str(i, &["key"]))
        .unwrap();
    let secrets = k8s_secrets();
    assert!(secrets.get(secret).is_some_and(|s| s.contains_key(key)), "no Secret {secret}/{key}");
    assert!(mounts.iter().all(|m| m.get("readOnly").and_then(Yaml::as_bool) == Some(true)
        || !matches!(yaml_str(m, &["name"]), Some("config" | "master-key"))));

    // Ports: the listen port is the container port the probes and the Service use.
    let ports = container.get("ports").and_then(Yaml::as_sequence).unwrap();
    let port_named = |port: &Yaml| -> u64 {
        match port {
            Yaml::Number(n) => n.as_u64().unwrap(),
            Yaml::String(name) => ports
                .iter()
                .find(|p| yaml_str(p, &["name"]) == Some(name))
                .and_then(|p| p.get("containerPort").and_then(Yaml::as_u64))
                .unwrap_or_else(|| panic!("no container port named {name}")),
            other => panic!("port {other:?}"),
        }
    };
    let listen = u64::from(settings.listen.port());
    assert!(settings.listen.ip().is_unspecified(), "a pod must listen on every interface");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].get("containerPort").and_then(Yaml::as_u64), Some(listen));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = yaml_at(&container, &[probe, "httpGet"]).unwrap();
        assert_eq!(yaml_str(get, &["path"]), Some(path), "{probe}");
        assert_eq!(port_named(get.get("port").unwrap()), listen, "{probe}");
    }
    if let Some(get) = yaml_at(&container, &["startupProbe", "httpGet"]) {
        assert_eq!(port_named(get.get("port").unwrap()), listen, "startupProbe");
    }
    let service = k8s("service.yaml").remove(0);
    assert!(matches(yaml_at(&service, &["spec", "selector"]).unwrap()));
    for port in yaml_at(&service, &["spec", "ports"]).and_then(Yaml::as_sequence).unwrap() {
        assert_eq!(port_named(port.get("targetPort").unwrap()), listen, "Service targetPort");
    }
    let pdb = k8s("poddisruptionbudget.yaml").remove(0);
    assert_eq!(yaml_at(&pdb, &["spec", "minAvailable"]).and_then(Yaml::as_u64), Some(1));
    assert!(matches(yaml_at(&pdb, &["spec", "selector", "matchLabels"]).unwrap()));

    // Shutdown: Kubernetes waits longer than the daemon's grace period before SIGKILL.
    let grace =
        yaml_at(pod, &["spec", "terminationGracePeriodSeconds"]).and_then(Yaml::as_u64).unwrap();
    assert!(grace > settings.api.shutdown_timeout_secs, "terminationGracePeriodSeconds {grace}");
}
