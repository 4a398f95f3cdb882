//! Reading a TOML document into [`Settings`]: syntax errors with their line and column,
//! interpolation, environment overrides, and a deserialization that recovers from every mistake
//! it meets, so that the whole file is reported in one pass.
//!
//! serde stops at the first error of a value. So each section (each array element, each
//! upstream) is deserialized in a loop: the error is recorded with its key path, the value is
//! repaired where the error points, and deserialization is tried again. An unknown key is taken
//! out; a value of the wrong type is taken out (its default applies) or replaced by a stand-in
//! of a type the field takes (`""`, `0`, `false`, `[]`, `{}`, the first that fits); a missing
//! key gets such a stand-in. Every repaired key path is *covered*: the rules and the
//! capabilities' checks see a default or a stand-in there, and what they would say about it is
//! a consequence of the problem already reported, not news.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use super::{ConfigSource, Environment, Location, Problem, Settings};

/// Top-level keys of the file.
const SECTIONS: &[&str] = &[
    "server",
    "telemetry",
    "store",
    "genesys",
    "admin",
    "audit",
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

/// At most this many repairs of one value (each costs one more deserialization of it).
const MAX_REPAIRS: usize = 1000;

/// What the loader read and what it found wrong.
pub(super) struct Loaded {
    /// `None` when the text is not TOML.
    pub(super) settings: Option<Settings>,
    pub(super) problems: Vec<Problem>,
    /// Key paths the problems are about (see the module docs).
    pub(super) covered: Vec<String>,
    /// The position of every key path of the document, in file order.
    pub(super) order: HashMap<String, usize>,
    /// `[[actions]]` names by index, `""` where an entry has none.
    pub(super) action_names: Vec<String>,
}

/// Problems and the key paths they cover.
#[derive(Default)]
struct Findings {
    problems: Vec<Problem>,
    covered: Vec<String>,
}

impl Findings {
    fn push(&mut self, problem: Problem, covers: String) {
        self.problems.push(problem);
        self.covered.push(covers);
    }

    /// A problem covering its own key path.
    fn report(&mut self, problem: Problem) {
        let covers = problem.path.clone();
        self.push(problem, covers);
    }
}

pub(super) fn parse(text: &str, env: &Environment, source: ConfigSource) -> Loaded {
    let mut table: Table = match toml::from_str(text) {
        Ok(table) => table,
        Err(err) => {
            // Only the parser's message, on one line: its rendering quotes the line of the file,
            // which may hold a secret.
            let message: Vec<&str> = err
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let mut problem = Problem::new("", format!("not valid TOML: {}", message.join("; ")));
            if let Some(span) = err.span() {
                problem = problem.at(Location::of_offset(text, span.start));
            }
            return Loaded {
                settings: None,
                problems: vec![problem],
                covered: Vec::new(),
                order: HashMap::new(),
                action_names: Vec::new(),
            };
        }
    };
    let mut found = Findings::default();
    // Interpolate first: values that come from GATEWAY_* overrides are taken literally (a secret
    // containing `${` must not be expanded, nor echoed in an error).
    for (key, value) in table.iter_mut() {
        interpolate(value, &key_path("", key), env, &mut found);
    }
    let overrides = apply_overrides(&mut table, env, &mut found);
    let order = key_order(&table);
    let action_names = action_names(&table);
    let pristine = overrides.iter().any(|o| o.guessed).then(|| table.clone());
    let (mut settings, mut read) = deserialize_all(table, source.clone());
    if let Some(mut table) = pristine {
        // An override's type was guessed from its text (`12345` → integer). Where the guess made
        // a field fail to deserialize, take the text as a string and read once more.
        let mut retyped = false;
        for o in overrides.iter().filter(|o| o.guessed) {
            let failed = read
                .problems
                .iter()
                .any(|p| p.path == o.path && p.message.starts_with("invalid type"));
            if failed
                && let Some((leaf, parents)) = o.segments.split_last()
                && let Some(node) = table_at(&mut table, parents)
            {
                node.insert(leaf.clone(), Value::String(o.raw.clone()));
                retyped = true;
            }
        }
        if retyped {
            (settings, read) = deserialize_all(table, source);
        }
    }
    for p in &mut read.problems {
        if let Some(o) = overrides.iter().find(|o| o.path == p.path) {
            p.message = format!("{} (set by {})", p.message, o.variable);
        }
    }
    found.problems.append(&mut read.problems);
    found.covered.append(&mut read.covered);
    Loaded {
        settings: Some(settings),
        problems: found.problems,
        covered: found.covered,
        order,
        action_names,
    }
}

fn deserialize_all(mut table: Table, source: ConfigSource) -> (Settings, Findings) {
    let mut found = Findings::default();
    for key in table.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            found.report(Problem::new(
                key_path("", key),
                unknown_key_message(key, SECTIONS),
            ));
        }
    }

    let mut s = Settings {
        source,
        ..Settings::default()
    };
    let mut take = |name: &str| table.remove(name);
    section(take("server"), "server", &mut s.server, &mut found);
    section(take("telemetry"), "telemetry", &mut s.telemetry, &mut found);
    section(take("store"), "store", &mut s.store, &mut found);
    section(take("genesys"), "genesys", &mut s.genesys, &mut found);
    section(take("admin"), "admin", &mut s.admin, &mut found);
    section(take("audit"), "audit", &mut s.audit, &mut found);
    array(
        take("jwt_issuers"),
        "jwt_issuers",
        &mut s.jwt_issuers,
        &mut found,
    );
    match take("upstreams") {
        None => {}
        Some(Value::Table(entries)) => {
            for (name, value) in entries {
                let path = key_path("upstreams", &name);
                if let Some(upstream) = deserialize(value, &path, &mut found) {
                    s.upstreams.insert(name, upstream);
                }
            }
        }
        Some(other) => found.report(type_problem("upstreams", "a table", &other)),
    }
    section(
        take("data_actions"),
        "data_actions",
        &mut s.data_actions,
        &mut found,
    );
    array(take("actions"), "actions", &mut s.actions, &mut found);
    section(take("ingest"), "ingest", &mut s.ingest, &mut found);
    section(take("delivery"), "delivery", &mut s.delivery, &mut found);
    array(take("targets"), "targets", &mut s.targets, &mut found);
    section(take("callbacks"), "callbacks", &mut s.callbacks, &mut found);
    (s, found)
}

fn section<T: DeserializeOwned>(
    value: Option<Value>,
    path: &str,
    slot: &mut T,
    found: &mut Findings,
) {
    if let Some(value) = value
        && let Some(parsed) = deserialize(value, path, found)
    {
        *slot = parsed;
    }
}

fn array<T: DeserializeOwned>(
    value: Option<Value>,
    path: &str,
    slot: &mut Vec<T>,
    found: &mut Findings,
) {
    match value {
        None => {}
        Some(Value::Array(items)) => {
            // Settings index = file index: past an entry that could not be read at all, the
            // entries are still read (for their own problems) but not kept, and the rules do
            // not speak about them.
            let count = items.len();
            let mut aligned = true;
            for (i, item) in items.into_iter().enumerate() {
                match deserialize(item, &format!("{path}[{i}]"), found) {
                    Some(parsed) if aligned => slot.push(parsed),
                    Some(_) => {}
                    None if aligned => {
                        aligned = false;
                        found
                            .covered
                            .extend((i..count).map(|j| format!("{path}[{j}]")));
                    }
                    None => {}
                }
            }
        }
        Some(other) => found.report(type_problem(path, "an array of tables", &other)),
    }
}

fn type_problem(path: &str, expected: &str, found: &Value) -> Problem {
    Problem::new(
        path,
        format!("expected {expected}, found {}", found.type_str()),
    )
}

/// One step of a key path below the value being deserialized.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Deserializes `value` (at key path `path`), recording every problem in it and repairing it
/// until it deserializes (see the module docs). `None` only when it cannot be repaired (the
/// key path is then covered whole).
fn deserialize<T: DeserializeOwned>(
    mut value: Value,
    path: &str,
    found: &mut Findings,
) -> Option<T> {
    let mut repair = Repair::default();
    for _ in 0..MAX_REPAIRS {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(parsed) => return Some(parsed),
            Err(err) => err,
        };
        let mut at = steps(err.path());
        let text = err.inner().to_string();
        // The TOML deserializer may append "\nin `key`" context lines; the key path says it.
        let message = text.lines().next().unwrap_or("").trim();
        let repaired = if let Some(field) = quoted_after(message, "missing field `") {
            let mut target = at.clone();
            target.push(Step::Key(field.to_owned()));
            if let Some(Value::Table(table)) = value_at(&value, &at)
                && field == "type"
            {
                // An enum's tag: without it nothing below can be read, so the table goes.
                if !repair.touched(&target) && !repair.touched(&at) {
                    let typo = table.keys().find(|k| nearest(k, &["type"]).is_some());
                    let problem = match typo {
                        Some(typo) => {
                            let mut shown = at.clone();
                            shown.push(Step::Key(typo.clone()));
                            Problem::new(render(path, &shown), unknown_key_message(typo, &["type"]))
                        }
                        None => Problem::new(render(path, &at), message),
                    };
                    found.push(problem, render(path, &at));
                }
                repair.replace(&mut value, at)
            } else {
                if !repair.touched(&target) {
                    found.push(
                        Problem::new(render(path, &at), message),
                        render(path, &target),
                    );
                }
                repair.stand_in(&mut value, target)
            }
        } else if let Some(field) = quoted_after(message, "unknown field `") {
            // serde_path_to_error already ends the path with the field, except inside an
            // internally tagged enum.
            if at.last() != Some(&Step::Key(field.to_owned())) {
                at.push(Step::Key(field.to_owned()));
            }
            if !repair.touched(&at) {
                found.report(Problem::new(
                    render(path, &at),
                    unknown_key_message(field, &expected_names(message)),
                ));
            }
            repair.remove(&mut value, at)
        } else if let Some(stand_in) = repair.rejected_stand_in(&at) {
            // The stand-in put in last does not fit (inside an internally tagged enum, errors
            // are reported at the enum's key path): try the next one.
            repair.stand_in(&mut value, stand_in)
        } else {
            if let Some(key) = culprit::<T>(&value, &at, message) {
                at.push(Step::Key(key));
            }
            let mut shown = at.clone();
            let text = if let Some(variant) = quoted_after(message, "unknown variant `") {
                if matches!(value_at(&value, &at), Some(Value::Table(t)) if t.contains_key("type"))
                {
                    shown.push(Step::Key("type".to_owned()));
                }
                unknown_variant_message(variant, &expected_names(message))
            } else {
                clean_message(message)
            };
            if !repair.touched(&shown) && !repair.touched(&at) {
                found.push(Problem::new(render(path, &shown), text), render(path, &at));
            }
            repair.replace(&mut value, at)
        };
        if !repaired {
            break;
        }
    }
    found.covered.push(path.to_owned());
    None
}

/// The repairs made to one value so far.
#[derive(Default)]
struct Repair {
    /// Key paths taken out (`None`) or given a stand-in (the index of the one put in last).
    touched: Vec<(Vec<Step>, Option<usize>)>,
    /// The stand-in put in by the last repair.
    last_stand_in: Option<Vec<Step>>,
}

impl Repair {
    /// Whether `at` is at or below a key path repaired already: its problem is ours.
    fn touched(&self, at: &[Step]) -> bool {
        self.touched.iter().any(|(t, _)| at.starts_with(t))
    }

    /// The stand-in put in by the last repair, when an error at `at` is about it.
    fn rejected_stand_in(&self, at: &[Step]) -> Option<Vec<Step>> {
        self.last_stand_in
            .as_ref()
            .filter(|s| s.starts_with(at))
            .cloned()
    }

    /// Takes the key at `at` out (its default applies), or puts a stand-in there when it
    /// cannot be taken out.
    fn remove(&mut self, value: &mut Value, at: Vec<Step>) -> bool {
        if remove_at(value, &at) {
            self.last_stand_in = None;
            self.touched.push((at, None));
            true
        } else {
            self.stand_in(value, at)
        }
    }

    /// The value at `at` is wrong: take it out, or replace it with a stand-in.
    fn replace(&mut self, value: &mut Value, at: Vec<Step>) -> bool {
        let stood_in = self
            .touched
            .iter()
            .any(|(t, stand_in)| *t == at && stand_in.is_some());
        if stood_in {
            self.stand_in(value, at)
        } else {
            self.remove(value, at)
        }
    }

    /// Puts the next stand-in at `at`; when none fits, repairs the table or array around it.
    fn stand_in(&mut self, value: &mut Value, at: Vec<Step>) -> bool {
        let position = self.touched.iter().position(|(t, _)| *t == at);
        let next = match position.map(|i| &self.touched[i].1) {
            Some(Some(tried)) => tried + 1,
            _ => 0,
        };
        let Some(candidate) = stand_in(value, &at, next) else {
            let Some((_, parent)) = at.split_last() else {
                return false;
            };
            return self.replace(value, parent.to_vec());
        };
        if !put_at(value, &at, candidate) {
            return false;
        }
        match position {
            Some(i) => self.touched[i].1 = Some(next),
            None => self.touched.push((at.clone(), Some(next))),
        }
        self.last_stand_in = Some(at);
        true
    }
}

/// Stand-in number `n` for the value at `at`, in the order they are tried. In an array, the
/// first is a copy of the first element: serde reads in order, so that one was read fine.
fn stand_in(value: &Value, at: &[Step], n: usize) -> Option<Value> {
    let sibling = match at.split_last() {
        Some((Step::Index(i), parent)) if *i > 0 => match value_at(value, parent) {
            Some(Value::Array(items)) => items.first().cloned(),
            _ => None,
        },
        _ => None,
    };
    let n = match (&sibling, n) {
        (Some(first), 0) => return Some(first.clone()),
        (Some(_), n) => n - 1,
        (None, n) => n,
    };
    Some(match n {
        0 => Value::String(String::new()),
        1 => Value::Integer(0),
        2 => Value::Boolean(false),
        3 => Value::Array(Vec::new()),
        4 => Value::Table(Table::new()),
        _ => return None,
    })
}

/// Inside an internally tagged enum (`auth = { type = "basic", … }`) serde reports every error
/// at the enum's key path. The key at fault is the one whose absence changes the error.
fn culprit<T: DeserializeOwned>(value: &Value, at: &[Step], message: &str) -> Option<String> {
    let Some(Value::Table(table)) = value_at(value, at) else {
        return None;
    };
    let about_a_value = ["invalid type: ", "invalid value: ", "invalid length "]
        .iter()
        .any(|prefix| message.starts_with(prefix));
    if !table.contains_key("type") || !about_a_value {
        return None;
    }
    table
        .keys()
        .filter(|k| k.as_str() != "type")
        .find(|key| {
            let mut without = value.clone();
            let mut steps = at.to_vec();
            steps.push(Step::Key((*key).clone()));
            remove_at(&mut without, &steps);
            match serde_path_to_error::deserialize::<_, T>(without) {
                Ok(_) => true,
                Err(err) => {
                    steps.pop();
                    let inner = err.inner().to_string();
                    self::steps(err.path()) != steps
                        || inner.lines().next().unwrap_or("").trim() != message
                }
            }
        })
        .cloned()
}

fn steps(path: &serde_path_to_error::Path) -> Vec<Step> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

fn render(path: &str, steps: &[Step]) -> String {
    let mut out = path.to_owned();
    for step in steps {
        match step {
            Step::Key(key) => out = key_path(&out, key),
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn value_at<'a>(value: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    steps
        .iter()
        .try_fold(value, |node, step| match (step, node) {
            (Step::Key(k), Value::Table(t)) => t.get(k),
            (Step::Index(i), Value::Array(a)) => a.get(*i),
            _ => None,
        })
}

fn value_at_mut<'a>(value: &'a mut Value, steps: &[Step]) -> Option<&'a mut Value> {
    steps
        .iter()
        .try_fold(value, |node, step| match (step, node) {
            (Step::Key(k), Value::Table(t)) => t.get_mut(k),
            (Step::Index(i), Value::Array(a)) => a.get_mut(*i),
            _ => None,
        })
}

/// Removes the table key at `steps`; false when there is none (or it is an array element,
/// which cannot be removed without shifting its siblings' key paths).
fn remove_at(value: &mut Value, steps: &[Step]) -> bool {
    let Some((Step::Key(last), parents)) = steps.split_last() else {
        return false;
    };
    match value_at_mut(value, parents) {
        Some(Value::Table(t)) => t.remove(last).is_some(),
        _ => false,
    }
}

/// Sets the value at `steps` (a table key or an existing array element).
fn put_at(value: &mut Value, steps: &[Step], new: Value) -> bool {
    let Some((last, parents)) = steps.split_last() else {
        *value = new;
        return true;
    };
    match (last, value_at_mut(value, parents)) {
        (Step::Key(k), Some(Value::Table(t))) => {
            t.insert(k.clone(), new);
            true
        }
        (Step::Index(i), Some(Value::Array(a))) if *i < a.len() => {
            a[*i] = new;
            true
        }
        _ => false,
    }
}

/// The text between `prefix` and the next backtick, when `message` starts with `prefix`.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    let end = rest
        .find("`, ")
        .or_else(|| rest.strip_suffix('`').map(str::len))?;
    Some(&rest[..end])
}

/// The names serde says it expected: "…, expected one of `a`, `b`" / "expected `a` or `b`".
fn expected_names(message: &str) -> Vec<&str> {
    match message.split_once("`, expected ") {
        Some((_, list)) => list.split('`').skip(1).step_by(2).collect(),
        None => Vec::new(),
    }
}

fn unknown_key_message(key: &str, known: &[&str]) -> String {
    match nearest(key, known) {
        Some(near) => format!("unknown key, did you mean {near}?"),
        None if known.is_empty() => "unknown key; this table takes no keys".to_owned(),
        None => format!("unknown key; known keys: {}", known.join(", ")),
    }
}

fn unknown_variant_message(variant: &str, known: &[&str]) -> String {
    let one_of = format!("must be one of {}", known.join(", "));
    match nearest(variant, known) {
        _ if known.is_empty() => "unknown variant".to_owned(),
        Some(near) => format!("{one_of} (did you mean {near}?)"),
        None => one_of,
    }
}

/// The known name `unknown` is most likely a typo of: a small edit away (a character left out,
/// added, changed or two swapped; more for longer names), or the only one that is `unknown`
/// with a unit suffix (`timeout` → `timeout_ms`).
fn nearest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let typed = unknown.to_ascii_lowercase();
    let allowed = match typed.chars().count() {
        0..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    let close = known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&typed, k), *k))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k);
    close.or_else(|| {
        let prefix = format!("{typed}_");
        let mut extended = known.iter().filter(|k| k.starts_with(&prefix));
        match (extended.next(), extended.next()) {
            (Some(only), None) => Some(*only),
            _ => None,
        }
    })
}

/// serde's message in the words of a config file, without the value it found (so that a secret
/// of the wrong type is not echoed).
fn clean_message(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        // "invalid type: string \"abc\", expected u64" → "invalid type: string, expected …"
        return format!(
            "invalid type: {}, expected {}",
            found_kind(found),
            expected_kind(expected)
        );
    }
    if message.starts_with("invalid value: ")
        && let Some((_, expected)) = message.split_once(", expected ")
    {
        return format!("invalid value, expected {}", expected_kind(expected));
    }
    if message.starts_with("data did not match any variant of untagged enum") {
        return "not one of the accepted forms (see the configuration reference)".to_owned();
    }
    message.to_owned()
}

fn found_kind(found: &str) -> &str {
    match found.split_whitespace().next().unwrap_or(found) {
        "map" => "table",
        "sequence" => "array",
        "floating" => "float",
        kind => kind,
    }
}

fn expected_kind(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer".to_owned(),
        "a sequence" => "an array".to_owned(),
        "a map" => "a table".to_owned(),
        e if e.starts_with("struct ") => "a table".to_owned(),
        e if e.starts_with("internally tagged enum") => "a table with a `type` key".to_owned(),
        e => e.to_owned(),
    }
}

/// `parent.key`, quoting keys that are not plain (`output."/a/b"`).
fn key_path(parent: &str, key: &str) -> String {
    let mut path = parent.to_owned();
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
    path
}

/// The position of every key path of `table` in a walk of the file in order.
fn key_order(table: &Table) -> HashMap<String, usize> {
    fn walk(value: &Value, path: String, order: &mut HashMap<String, usize>) {
        let n = order.len();
        order.entry(path.clone()).or_insert(n);
        match value {
            Value::Table(t) => {
                for (key, child) in t {
                    walk(child, key_path(&path, key), order);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{path}[{i}]"), order);
                }
            }
            _ => {}
        }
    }
    let mut order = HashMap::new();
    for (key, value) in table {
        walk(value, key_path("", key), &mut order);
    }
    order
}

fn action_names(table: &Table) -> Vec<String> {
    let Some(Value::Array(actions)) = table.get("actions") else {
        return Vec::new();
    };
    actions
        .iter()
        .map(|a| match a.get("name") {
            Some(Value::String(name)) => name.clone(),
            _ => String::new(),
        })
        .collect()
}

/// The key path `path` is in (`a.b` for `a.b.c`, `a.b` for `a.b[2]`, `a` for `a."x.y"`).
fn parent_path(path: &str) -> Option<&str> {
    if path.ends_with(']') {
        return path.rfind('[').map(|i| &path[..i]);
    }
    if let Some(quoted) = path.strip_suffix('"') {
        // The opening quote is the last `"` not escaped.
        let bytes = quoted.as_bytes();
        let open = (0..bytes.len())
            .rev()
            .find(|&i| bytes[i] == b'"' && (i == 0 || bytes[i - 1] != b'\\'))?;
        return open.checked_sub(1).map(|dot| &path[..dot]);
    }
    path.rfind('.').map(|i| &path[..i])
}

/// Whether `path` is `covered` or a key path below it.
pub(super) fn is_at_or_below(path: &str, covered: &str) -> bool {
    !covered.is_empty()
        && path
            .strip_prefix(covered)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Where a problem at `path` goes in file order: problems about the file first, then at the
/// position of the key (or of the nearest enclosing key in the file), then those of sections
/// the file does not have, in section order.
pub(super) fn file_rank(order: &HashMap<String, usize>, path: &str) -> (u8, usize) {
    if path.is_empty() {
        return (0, 0);
    }
    let mut at = Some(path);
    while let Some(p) = at {
        if let Some(&n) = order.get(p) {
            return (1, n);
        }
        at = parent_path(p);
    }
    let section = path.split(['.', '[']).next().unwrap_or(path);
    (
        2,
        SECTIONS
            .iter()
            .position(|s| *s == section)
            .unwrap_or(SECTIONS.len()),
    )
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string below `value`.
fn interpolate(value: &mut Value, path: &str, env: &Environment, found: &mut Findings) {
    match value {
        Value::String(s) if s.contains("${") => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(message) => found.report(Problem::new(path, message)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), env, found);
            }
        }
        Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                interpolate(item, &key_path(path, key), env, found);
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
            .ok_or_else(|| "unterminated `${` (write `$${` for a literal `${`)".to_owned())?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (expr, None),
        };
        let valid_name =
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(
                "invalid variable reference: names are made of A-Z, a-z, 0-9 and _".to_owned(),
            );
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
fn apply_overrides(table: &mut Table, env: &Environment, found: &mut Findings) -> Vec<Override> {
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
            let hint = nearest(&segments[0], SECTIONS)
                .map(|s| format!(", did you mean {}?", s.to_ascii_uppercase()))
                .unwrap_or_default();
            found.report(Problem::new(
                path,
                format!("{key} overrides an unknown section{hint}"),
            ));
            continue;
        }
        let Some(node) = table_at(table, &segments[..segments.len() - 1]) else {
            found.report(Problem::new(
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
                    found.report(Problem::new(
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
    fn offsets_become_lines_and_columns_in_characters() {
        let text = "ab\ncafé x\n";
        let at = |offset| {
            let l = Location::of_offset(text, offset);
            (l.line, l.column)
        };
        assert_eq!(at(0), (1, 1));
        assert_eq!(at(2), (1, 3));
        assert_eq!(at(3), (2, 1));
        assert_eq!(at(9), (2, 6), "é is one column");
        assert_eq!(at(8), (2, 5), "inside a character: its start");
        assert_eq!(at(99), (3, 1), "past the end: the end");
    }

    #[test]
    fn the_nearest_key_is_suggested_only_when_close() {
        let known = [
            "listen",
            "request_timeout_ms",
            "timeout_ms",
            "max_body_bytes",
        ];
        assert_eq!(
            nearest("request_timeot_ms", &known),
            Some("request_timeout_ms")
        );
        assert_eq!(nearest("Listen", &known), Some("listen"));
        assert_eq!(
            nearest("lsiten", &known),
            Some("listen"),
            "a swap is one edit"
        );
        assert_eq!(
            nearest("timeout", &known),
            Some("timeout_ms"),
            "a unit left out"
        );
        assert_eq!(
            nearest("body", &known),
            None,
            "only a unit suffix may be left out"
        );
        assert_eq!(nearest("colour", &known), None);
        assert_eq!(nearest("x", &known), None);
        assert_eq!(
            nearest("max", &["max_batch", "max_queue_depth"]),
            None,
            "two keys extend it"
        );
    }

    #[test]
    fn serde_messages_are_read_and_cleaned() {
        let m = "unknown field `colour`, expected one of `listen`, `io_threads`";
        assert_eq!(quoted_after(m, "unknown field `"), Some("colour"));
        assert_eq!(expected_names(m), ["listen", "io_threads"]);
        assert_eq!(
            expected_names("unknown variant `x`, expected `text` or `json`"),
            ["text", "json"]
        );
        assert!(expected_names("unknown field `x`, there are no fields").is_empty());
        assert_eq!(
            quoted_after("missing field `path`", "missing field `"),
            Some("path")
        );
        assert_eq!(
            clean_message("invalid type: string \"s3cr3t\", expected u64"),
            "invalid type: string, expected a non-negative integer"
        );
        assert_eq!(
            clean_message("invalid type: map, expected struct ServerSettings"),
            "invalid type: table, expected a table"
        );
        assert_eq!(
            clean_message("invalid value: integer `-5`, expected u32"),
            "invalid value, expected a non-negative integer"
        );
    }

    #[test]
    fn key_paths_nest_and_rank_in_file_order() {
        assert_eq!(parent_path("a.b.c"), Some("a.b"));
        assert_eq!(parent_path("a.b[2]"), Some("a.b"));
        assert_eq!(parent_path("a.\"x.y\""), Some("a"));
        assert_eq!(parent_path("a"), None);
        assert!(is_at_or_below("actions[1].path", "actions[1]"));
        assert!(is_at_or_below("actions[1]", "actions[1]"));
        assert!(!is_at_or_below("actions[10].path", "actions[1]"));
        assert!(!is_at_or_below("server.listen", ""));

        let table: Table = toml::from_str(
            "[genesys]\nsimulate = true\n[server]\nlisten = \"x\"\n[[actions]]\nname = \"a\"\n",
        )
        .unwrap();
        let order = key_order(&table);
        let rank = |p| file_rank(&order, p);
        assert!(rank("") < rank("genesys.simulate"));
        assert!(rank("genesys.simulate") < rank("server"));
        // A key the file does not have ranks with the table it would be in.
        assert_eq!(rank("server.max_body_bytes"), rank("server"));
        assert!(rank("server.max_body_bytes") < rank("server.listen"));
        assert!(rank("actions[0].timeout_ms") < rank("actions[0].name"));
        assert!(
            rank("actions[0].name") < rank("ingest.max_batch"),
            "absent sections last"
        );
        assert!(
            rank("ingest.max_batch") < rank("callbacks.queues"),
            "in section order"
        );
    }

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
