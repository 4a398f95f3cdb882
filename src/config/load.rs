//! Reading a TOML document into [`Settings`]: interpolation, environment overrides and
//! section-by-section deserialization that reports every broken section with its key path.

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use super::{ConfigSource, Environment, Problem, Settings};

/// Top-level keys of the file, in the order problems are reported.
const SECTIONS: &[&str] = &[
    "server",
    "telemetry",
    "store",
    "genesys",
    "admin",
    "jwt_issuers",
    "upstreams",
    "data_actions",
    "actions",
    "ingest",
    "delivery",
    "targets",
    "callbacks",
];

/// Environment override prefix: `GATEWAY_<SECTION>__<KEY>`.
const OVERRIDE_PREFIX: &str = "GATEWAY_";

pub(super) fn parse(
    text: &str,
    env: &Environment,
    source: ConfigSource,
) -> Result<Settings, Vec<Problem>> {
    let mut table: Table = toml::from_str(text).map_err(|err| {
        vec![Problem::new(
            "",
            format!("not valid TOML: {}", err.message().trim()),
        )]
    })?;
    let mut problems = Vec::new();
    apply_overrides(&mut table, env, &mut problems);
    for (key, value) in table.iter_mut() {
        interpolate(value, key, env, &mut problems);
    }
    for key in table.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            problems.push(Problem::new(key.clone(), "unknown key"));
        }
    }

    let mut settings = Settings {
        source,
        ..Settings::default()
    };
    let mut take = |name: &str| table.remove(name);
    section(
        take("server"),
        "server",
        &mut settings.server,
        &mut problems,
    );
    section(
        take("telemetry"),
        "telemetry",
        &mut settings.telemetry,
        &mut problems,
    );
    section(take("store"), "store", &mut settings.store, &mut problems);
    section(
        take("genesys"),
        "genesys",
        &mut settings.genesys,
        &mut problems,
    );
    section(take("admin"), "admin", &mut settings.admin, &mut problems);
    array(
        take("jwt_issuers"),
        "jwt_issuers",
        &mut settings.jwt_issuers,
        &mut problems,
    );
    if let Some(upstreams) = take("upstreams") {
        match upstreams {
            Value::Table(entries) => {
                for (name, value) in entries {
                    let path = format!("upstreams.{name}");
                    if let Some(upstream) = deserialize(value, &path, &mut problems) {
                        settings.upstreams.insert(name, upstream);
                    }
                }
            }
            other => problems.push(type_problem("upstreams", "a table", &other)),
        }
    }
    section(
        take("data_actions"),
        "data_actions",
        &mut settings.data_actions,
        &mut problems,
    );
    array(
        take("actions"),
        "actions",
        &mut settings.actions,
        &mut problems,
    );
    section(
        take("ingest"),
        "ingest",
        &mut settings.ingest,
        &mut problems,
    );
    section(
        take("delivery"),
        "delivery",
        &mut settings.delivery,
        &mut problems,
    );
    array(
        take("targets"),
        "targets",
        &mut settings.targets,
        &mut problems,
    );
    section(
        take("callbacks"),
        "callbacks",
        &mut settings.callbacks,
        &mut problems,
    );

    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(problems)
    }
}

fn section<T: DeserializeOwned>(
    value: Option<Value>,
    path: &str,
    slot: &mut T,
    problems: &mut Vec<Problem>,
) {
    if let Some(value) = value
        && let Some(parsed) = deserialize(value, path, problems)
    {
        *slot = parsed;
    }
}

fn array<T: DeserializeOwned>(
    value: Option<Value>,
    path: &str,
    slot: &mut Vec<T>,
    problems: &mut Vec<Problem>,
) {
    match value {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                if let Some(parsed) = deserialize(item, &format!("{path}[{i}]"), problems) {
                    slot.push(parsed);
                }
            }
        }
        Some(other) => problems.push(type_problem(path, "an array of tables", &other)),
    }
}

fn type_problem(path: &str, expected: &str, found: &Value) -> Problem {
    Problem::new(
        path,
        format!("expected {expected}, found {}", found.type_str()),
    )
}

/// Deserializes one value, turning the first error into a problem with its full key path.
fn deserialize<T: DeserializeOwned>(
    value: Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(parsed) => Some(parsed),
        Err(err) => {
            let mut full = path.to_owned();
            for segment in err.path().iter() {
                use serde_path_to_error::Segment;
                match segment {
                    Segment::Seq { index } => full.push_str(&format!("[{index}]")),
                    Segment::Map { key } => push_key(&mut full, key),
                    Segment::Enum { variant } => push_key(&mut full, variant),
                    Segment::Unknown => {}
                }
            }
            let message = clean_message(&err.inner().to_string());
            // serde reports an unknown field at its parent; name the field itself.
            if let Some(field) = unknown_field(&message) {
                push_key(&mut full, field);
                problems.push(Problem::new(full, "unknown key"));
            } else {
                problems.push(Problem::new(full, message));
            }
            None
        }
    }
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        path.push_str(key);
    } else {
        path.push_str(&format!("\"{}\"", key.replace('"', "\\\"")));
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// Drops the value echo TOML/serde sometimes put in messages, so secrets never reach them.
fn clean_message(message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        // "invalid type: string \"abc\", expected u64" → "invalid type: string, expected u64"
        if let Some((found, expected)) = rest.split_once(", expected ") {
            let kind = found.split_whitespace().next().unwrap_or(found);
            return format!("invalid type: {kind}, expected {expected}");
        }
    }
    if message.starts_with("invalid value: ")
        && let Some((_, expected)) = message.split_once(", expected ")
    {
        return format!("invalid value, expected {expected}");
    }
    if message.starts_with("data did not match any variant of untagged enum") {
        return "not one of the accepted forms (see the configuration reference)".to_owned();
    }
    message.to_owned()
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string below `value`.
fn interpolate(value: &mut Value, path: &str, env: &Environment, problems: &mut Vec<Problem>) {
    match value {
        Value::String(s) if s.contains("${") => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(message) => problems.push(Problem::new(path, message)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), env, problems);
            }
        }
        Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                let mut child = path.to_owned();
                push_key(&mut child, key);
                interpolate(item, &child, env, problems);
            }
        }
        _ => {}
    }
}

/// Expands one string. `$${` is a literal `${`.
pub(super) fn expand(input: &str, env: &Environment) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{` in `{}`", redact_hint(input)))?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (expr, None),
        };
        let valid_name =
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(format!("`${{{name}}}` is not a valid variable reference"));
        }
        match (env.var(name), default) {
            (Some(""), Some(d)) => out.push_str(d),
            (Some(v), _) => out.push_str(v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Shows the variable references of a string without its literal parts.
fn redact_hint(input: &str) -> String {
    if input.len() > 40 {
        format!("{}…", &input[..input.floor_char_boundary(40)])
    } else {
        input.to_owned()
    }
}

/// Applies `GATEWAY_<SECTION>__<KEY>[__<KEY>…]` variables. The new value keeps the type of the
/// value it replaces; a new key is parsed as a TOML value when it is one, else taken as a string.
fn apply_overrides(table: &mut Table, env: &Environment, problems: &mut Vec<Problem>) {
    let mut overrides: Vec<(&str, &str)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(OVERRIDE_PREFIX) && k.contains("__"))
        .collect();
    overrides.sort();
    for (key, raw) in overrides {
        let segments: Vec<String> = key[OVERRIDE_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if segments.iter().any(String::is_empty) {
            continue;
        }
        let path = segments.join(".");
        if !SECTIONS.contains(&segments[0].as_str()) {
            problems.push(Problem::new(
                path,
                format!("{key} overrides an unknown section"),
            ));
            continue;
        }
        let Some(node) = table_at(table, &segments[..segments.len() - 1]) else {
            problems.push(Problem::new(
                path.clone(),
                format!("{key} cannot override inside a value that is not a table"),
            ));
            continue;
        };
        let leaf = segments.last().expect("at least one segment").clone();
        let value = match node.get(&leaf) {
            Some(Value::String(_)) => Value::String(raw.to_owned()),
            Some(existing) => match parse_scalar(raw) {
                Some(v) if v.same_type(existing) => v,
                _ => {
                    problems.push(Problem::new(
                        path,
                        format!("{key} must be of type {}", existing.type_str()),
                    ));
                    continue;
                }
            },
            None => parse_scalar(raw).unwrap_or_else(|| Value::String(raw.to_owned())),
        };
        node.insert(leaf, value);
    }
}

/// The table at `path` below `table`, created as needed; `None` when a value on the way is not a
/// table.
fn table_at<'a>(table: &'a mut Table, path: &[String]) -> Option<&'a mut Table> {
    let Some((first, rest)) = path.split_first() else {
        return Some(table);
    };
    match table
        .entry(first.clone())
        .or_insert_with(|| Value::Table(Table::new()))
    {
        Value::Table(child) => table_at(child, rest),
        _ => None,
    }
}

fn parse_scalar(raw: &str) -> Option<Value> {
    let doc: Table = toml::from_str(&format!("v = {raw}")).ok()?;
    doc.get("v").cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables_and_defaults() {
        let env = Environment::from_pairs([("A", "1"), ("EMPTY", "")]);
        assert_eq!(expand("x${A}y", &env).unwrap(), "x1y");
        assert_eq!(expand("${B:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand("${EMPTY:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
        assert_eq!(expand("$${A}", &env).unwrap(), "${A}");
        assert_eq!(
            expand("${MISSING}", &env).unwrap_err(),
            "environment variable MISSING is not set"
        );
        assert!(expand("${A", &env).is_err());
        assert!(expand("${}", &env).is_err());
    }
}
