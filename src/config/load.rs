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
    let overrides = apply_overrides(&mut table, env, &mut problems);
    for (key, value) in table.iter_mut() {
        interpolate(value, key, env, &mut problems);
    }
    let pristine = (!overrides.is_empty()).then(|| table.clone());
    let result = deserialize_all(table, source.clone(), problems.clone());
    let Some(mut table) = pristine else {
        return result;
    };
    let Err(found) = &result else {
        return result;
    };
    // An override's type was guessed from its text (`12345` → integer). Where the guess made a
    // field fail to deserialize, take the text as a string and try once more.
    let mut retyped = false;
    for o in &overrides {
        let failed = found
            .iter()
            .any(|p| p.path == o.path && p.message.starts_with("invalid type"));
        if failed
            && o.guessed
            && let Some(node) = table_at(&mut table, &o.segments[..o.segments.len() - 1])
        {
            node.insert(
                o.segments[o.segments.len() - 1].clone(),
                Value::String(o.raw.clone()),
            );
            retyped = true;
        }
    }
    let result = if retyped {
        deserialize_all(table, source, problems)
    } else {
        result
    };
    result.map_err(|problems| {
        problems
            .into_iter()
            .map(|mut p| {
                if let Some(o) = overrides.iter().find(|o| o.path == p.path) {
                    p.message = format!("{} (set by {})", p.message, o.variable);
                }
                p
            })
            .collect()
    })
}

fn deserialize_all(
    mut table: Table,
    source: ConfigSource,
    mut problems: Vec<Problem>,
) -> Result<Settings, Vec<Problem>> {
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

/// Deserializes one value. serde stops at the first error, so on an error the offending key is
/// taken out and the value tried again, until it deserializes or nothing more can be taken out:
/// every independent mistake in a section is reported in one pass.
fn deserialize<T: DeserializeOwned>(
    mut value: Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    use serde_path_to_error::Segment;
    let mut removed: Vec<String> = Vec::new();
    let mut failed = false;
    for _ in 0..64 {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(parsed) => return (!failed).then_some(parsed),
            Err(err) => err,
        };
        let mut full = path.to_owned();
        let mut keys: Vec<KeyRef> = Vec::new();
        for segment in err.path().iter() {
            match segment {
                Segment::Seq { index } => {
                    full.push_str(&format!("[{index}]"));
                    keys.push(KeyRef::Index(*index));
                }
                Segment::Map { key } => {
                    push_key(&mut full, key);
                    keys.push(KeyRef::Key(key.clone()));
                }
                Segment::Enum { variant } => push_key(&mut full, variant),
                Segment::Unknown => {}
            }
        }
        let message = clean_message(&err.inner().to_string());
        if let Some(field) = missing_field(&message) {
            let mut missing = full.clone();
            push_key(&mut missing, field);
            // A field we took out ourselves is not missing from the file.
            if !removed.contains(&missing) {
                problems.push(Problem::new(full, message));
            }
            return None;
        }
        if let Some(field) = unknown_field(&message) {
            // serde_path_to_error already ends the path with the field; plain serde does not.
            let mut with_field = String::new();
            push_key(&mut with_field, field);
            if !full.ends_with(&with_field) {
                push_key(&mut full, field);
                keys.push(KeyRef::Key(field.to_owned()));
            }
            problems.push(Problem::new(full.clone(), "unknown key"));
        } else {
            problems.push(Problem::new(full.clone(), message));
        }
        failed = true;
        if keys.is_empty() || !remove_at(&mut value, &keys) {
            return None;
        }
        removed.push(full);
    }
    None
}

enum KeyRef {
    Key(String),
    Index(usize),
}

/// Removes the value at `keys` below `value`; false when there is nothing there to remove (or it
/// is an array element, which cannot be removed without shifting its siblings' paths).
fn remove_at(value: &mut Value, keys: &[KeyRef]) -> bool {
    let Some((last, parents)) = keys.split_last() else {
        return false;
    };
    let mut node = value;
    for key in parents {
        node = match (key, node) {
            (KeyRef::Key(k), Value::Table(t)) => match t.get_mut(k) {
                Some(child) => child,
                None => return false,
            },
            (KeyRef::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(child) => child,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (KeyRef::Key(k), Value::Table(t)) => t.remove(k).is_some(),
        _ => false,
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
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
    // The TOML deserializer appends "\nin `key`" context lines; the key path already says it.
    let message = message.lines().next().unwrap_or("").trim();
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

/// One applied environment override.
struct Override {
    variable: String,
    segments: Vec<String>,
    path: String,
    raw: String,
    /// The value's type was guessed from its text (the key was not in the file).
    guessed: bool,
}

/// Applies `GATEWAY_<SECTION>__<KEY>[__<KEY>…]` variables. The new value keeps the type of the
/// value it replaces; a new key is parsed as a TOML value when it is one, else taken as a string.
fn apply_overrides(
    table: &mut Table,
    env: &Environment,
    problems: &mut Vec<Problem>,
) -> Vec<Override> {
    let mut applied = Vec::new();
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
        let mut guessed = false;
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
            None => {
                guessed = true;
                parse_scalar(raw).unwrap_or_else(|| Value::String(raw.to_owned()))
            }
        };
        guessed &= !value.is_str();
        node.insert(leaf, value);
        applied.push(Override {
            variable: key.to_owned(),
            segments,
            path,
            raw: raw.to_owned(),
            guessed,
        });
    }
    applied
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
