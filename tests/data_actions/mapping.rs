//! The mapping language of data actions, table-driven, plus a property
//! test that no input can make a compiled mapping panic.

use bytes::Bytes;
use genesys_gateway::config::MappingSource;
use genesys_gateway::data_actions::DataAction;
use genesys_gateway::data_actions::mapping::{ObjectPlan, OutputPlan};
use http::Method;
use proptest::prelude::*;
use serde_json::{Value, json};

/// One mapping case: `target → source` entries applied to `doc`, and what comes out.
struct Case {
    what: &'static str,
    entries: Vec<(&'static str, MappingSource)>,
    doc: Value,
    expected: Result<Value, Vec<&'static str>>,
}

fn case(
    what: &'static str,
    entries: Vec<(&'static str, MappingSource)>,
    doc: Value,
    expected: Result<Value, Vec<&'static str>>,
) -> Case {
    Case {
        what,
        entries,
        doc,
        expected,
    }
}

fn p(pointer: &str) -> MappingSource {
    MappingSource::pointer(pointer)
}

#[test]
fn object_mappings() {
    let doc = json!({
        "id": "u-1",
        "profile": {"name": "Ann", "emails": ["a@x", "b@x"], "age": 41, "vip": false, "note": null},
        "a/b": "slash",
        "m~n": "tilde",
        "": "empty key",
        "list": [{"sku": "s1"}, {"sku": "s2"}]
    });
    let cases = vec![
        case(
            "plain pointer",
            vec![("/id", p("/id"))],
            doc.clone(),
            Ok(json!({"id": "u-1"})),
        ),
        case(
            "nested source and target",
            vec![("/user/displayName", p("/profile/name"))],
            doc.clone(),
            Ok(json!({"user": {"displayName": "Ann"}})),
        ),
        case(
            "array index source",
            vec![("/primary", p("/profile/emails/1"))],
            doc.clone(),
            Ok(json!({"primary": "b@x"})),
        ),
        case(
            "~1 escape reads a slash",
            vec![("/v", p("/a~1b"))],
            doc.clone(),
            Ok(json!({"v": "slash"})),
        ),
        case(
            "~0 escape reads a tilde",
            vec![("/v", p("/m~0n"))],
            doc.clone(),
            Ok(json!({"v": "tilde"})),
        ),
        case(
            "escapes in targets",
            vec![("/x~1y/p~0q", p("/id"))],
            doc.clone(),
            Ok(json!({"x/y": {"p~q": "u-1"}})),
        ),
        case(
            "empty key",
            vec![("/e", p("/"))],
            doc.clone(),
            Ok(json!({"e": "empty key"})),
        ),
        case(
            "whole document",
            vec![("/all", p(""))],
            json!({"k": 1}),
            Ok(json!({"all": {"k": 1}})),
        ),
        case(
            "root target replaces the output",
            vec![("", p("/profile/emails"))],
            doc.clone(),
            Ok(json!(["a@x", "b@x"])),
        ),
        case(
            "objects and arrays are copied",
            vec![("/p", p("/list"))],
            doc.clone(),
            Ok(json!({"p": [{"sku": "s1"}, {"sku": "s2"}]})),
        ),
        case(
            "missing optional source is omitted",
            vec![("/id", p("/id")), ("/x", p("/nope"))],
            doc.clone(),
            Ok(json!({"id": "u-1"})),
        ),
        case(
            "missing parent is just missing",
            vec![("/x", p("/nope/deeper/still"))],
            doc.clone(),
            Ok(json!({})),
        ),
        case(
            "descending into a scalar finds nothing",
            vec![("/x", p("/id/0"))],
            doc.clone(),
            Ok(json!({})),
        ),
        case(
            "index past the end finds nothing",
            vec![("/x", p("/profile/emails/2"))],
            doc.clone(),
            Ok(json!({})),
        ),
        case(
            "non-canonical index finds nothing",
            vec![("/x", p("/profile/emails/01"))],
            doc.clone(),
            Ok(json!({})),
        ),
        case(
            "present null is copied",
            vec![("/n", p("/profile/note"))],
            doc.clone(),
            Ok(json!({"n": null})),
        ),
        case(
            "false and numbers are values",
            vec![("/vip", p("/profile/vip")), ("/age", p("/profile/age"))],
            doc.clone(),
            Ok(json!({"vip": false, "age": 41})),
        ),
        case(
            "default when missing",
            vec![("/tier", MappingSource::or_default("/tier", json!("std")))],
            doc.clone(),
            Ok(json!({"tier": "std"})),
        ),
        case(
            "default not used when present",
            vec![("/id", MappingSource::or_default("/id", json!("dflt")))],
            doc.clone(),
            Ok(json!({"id": "u-1"})),
        ),
        case(
            "default may be any JSON",
            vec![(
                "/tags",
                MappingSource::or_default("/tags", json!(["a", {"b": 1}])),
            )],
            doc.clone(),
            Ok(json!({"tags": ["a", {"b": 1}]})),
        ),
        case(
            "required and present",
            vec![("/id", MappingSource::required("/id"))],
            doc.clone(),
            Ok(json!({"id": "u-1"})),
        ),
        case(
            "required and missing names every missing pointer",
            vec![
                ("/a", MappingSource::required("/nope")),
                ("/b", MappingSource::required("/profile/missing")),
                ("/c", p("/id")),
            ],
            doc.clone(),
            Err(vec!["/nope", "/profile/missing"]),
        ),
        case(
            "required with a default uses the default",
            vec![(
                "/a",
                MappingSource::From {
                    from: "/nope".into(),
                    default: Some(json!(0)),
                    required: true,
                },
            )],
            doc.clone(),
            Ok(json!({"a": 0})),
        ),
        case(
            "literal",
            vec![
                ("/source", MappingSource::literal("genesys")),
                ("/n", MappingSource::literal(3)),
            ],
            doc.clone(),
            Ok(json!({"source": "genesys", "n": 3})),
        ),
        case(
            "literal object",
            vec![("/meta", MappingSource::literal(json!({"v": [1, 2]})))],
            doc.clone(),
            Ok(json!({"meta": {"v": [1, 2]}})),
        ),
        case(
            "array targets by index, any order, gaps padded with null",
            vec![("/skus/2", p("/list/1/sku")), ("/skus/0", p("/list/0/sku"))],
            doc.clone(),
            Ok(json!({"skus": ["s1", null, "s2"]})),
        ),
        case(
            "array of objects by index",
            vec![
                ("/lines/0/sku", p("/list/0/sku")),
                ("/lines/0/qty", MappingSource::literal(1)),
            ],
            doc.clone(),
            Ok(json!({"lines": [{"sku": "s1", "qty": 1}]})),
        ),
        case(
            "append with -",
            vec![("/emails/-", p("/profile/emails/0"))],
            doc.clone(),
            Ok(json!({"emails": ["a@x"]})),
        ),
        case(
            "source reads from a non-object document",
            vec![("/first", p("/0"))],
            json!(["zero", "one"]),
            Ok(json!({"first": "zero"})),
        ),
        case(
            "the first token of a target is a member name, even an index or -",
            vec![("/0", p("/id")), ("/-", p("/a~1b")), ("/7/0", p("/m~0n"))],
            doc.clone(),
            Ok(json!({"0": "u-1", "-": "slash", "7": ["tilde"]})),
        ),
        case(
            "source document is a scalar",
            vec![("/x", p("/a")), ("/all", p(""))],
            json!(7),
            Ok(json!({"all": 7})),
        ),
    ];
    for c in cases {
        let entries: Vec<(&str, &MappingSource)> = c.entries.iter().map(|(t, s)| (*t, s)).collect();
        let plan = ObjectPlan::compile(entries)
            .unwrap_or_else(|e| panic!("{}: does not compile: {e:?}", c.what));
        match (plan.apply(&c.doc), c.expected) {
            (Ok(out), Ok(expected)) => assert_eq!(out, expected, "{}", c.what),
            (Err(details), Err(pointers)) => {
                let got: Vec<&str> = details.iter().map(|d| d.field_name.as_str()).collect();
                assert_eq!(got, pointers, "{}", c.what);
                assert!(
                    details.iter().all(|d| d.error_code == "required"),
                    "{}",
                    c.what
                );
            }
            (got, expected) => panic!("{}: got {got:?}, expected {expected:?}", c.what),
        }
    }
}

#[test]
fn invalid_mappings_are_refused_at_load() {
    let cases: Vec<(&str, Vec<(&str, MappingSource)>)> = vec![
        ("target without leading slash", vec![("id", p("/id"))]),
        ("source without leading slash", vec![("/id", p("id"))]),
        ("bad escape in source", vec![("/id", p("/a~2"))]),
        ("bad escape in target", vec![("/a~", p("/id"))]),
        ("- in a source", vec![("/id", p("/list/-"))]),
        ("- not last in a target", vec![("/a/-/b", p("/id"))]),
        (
            "overlapping targets",
            vec![("/a", p("/x")), ("/a/b", p("/y"))],
        ),
        (
            "root target with others",
            vec![("", p("/x")), ("/a", p("/y"))],
        ),
        (
            "index and name on one container",
            vec![("/a/0", p("/x")), ("/a/b", p("/y"))],
        ),
        (
            "append and index on one array",
            vec![("/a/-", p("/x")), ("/a/1", p("/y"))],
        ),
        ("huge index", vec![("/a/100000", p("/x"))]),
        (
            "bad pointer in from",
            vec![(
                "/a",
                MappingSource::From {
                    from: "x".into(),
                    default: None,
                    required: false,
                },
            )],
        ),
    ];
    for (what, entries) in cases {
        let entries: Vec<(&str, &MappingSource)> = entries.iter().map(|(t, s)| (*t, s)).collect();
        assert!(ObjectPlan::compile(entries).is_err(), "{what}");
    }
}

#[test]
fn request_rendering_end_to_end() {
    let action = DataAction::builder("createCallback")
        .upstream("genesys")
        .method(Method::POST)
        .path("/api/v2/queues/{queueId}/items")
        .param("queueId", "/queue/id")
        .query("mode", MappingSource::literal("fast"))
        .query("ids", "/ids")
        .header("X-Customer", "/customer~1id")
        .body_field("/routingData/queueId", "/queue/id")
        .body_field("/callbackNumbers/0", MappingSource::required("/phone"))
        .body_field(
            "/callbackUserName",
            MappingSource::or_default("/name", json!("Unknown")),
        )
        .build()
        .unwrap();
    let input = json!({"queue": {"id": "q/1"}, "ids": [1, "two"], "customer/id": "c-7",
                       "phone": "+14155550199"});
    let r = action
        .request()
        .render(&input, &Bytes::from_static(b"{}"))
        .unwrap();
    assert_eq!(
        r.path_and_query,
        "/api/v2/queues/q%2F1/items?mode=fast&ids=1&ids=two"
    );
    assert_eq!(r.headers["x-customer"], "c-7");
    let body: Value = serde_json::from_slice(&r.body.unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"routingData": {"queueId": "q/1"}, "callbackNumbers": ["+14155550199"],
               "callbackUserName": "Unknown"})
    );
    let err = action
        .request()
        .render(&json!({}), &Bytes::new())
        .unwrap_err();
    let fields: Vec<_> = err.iter().map(|d| d.field_name.as_str()).collect();
    assert_eq!(fields, ["/queue/id", "/phone"]);
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z0-9/~. -]{0,8}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z0-9~/]{0,4}|0|1|2", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Objects with the keys [`fuzz_action`] reads, holding arbitrary values, so that rendering gets
/// past the required checks as often as not.
fn shaped_input() -> impl Strategy<Value = Value> {
    let keys = prop::sample::subsequence(vec!["a", "b", "q", "arr", "h", "r", "t~u", "p"], 0..=8);
    (keys, prop::collection::vec(arb_json(), 8)).prop_map(|(keys, values)| {
        Value::Object(
            keys.into_iter()
                .zip(values)
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    })
}

fn fuzz_action() -> DataAction {
    DataAction::builder("fuzz")
        .upstream("u")
        .method(Method::PATCH)
        .path("/x/{a}/{b}?static=1")
        .param("a", "/a")
        .param("b", "/b")
        .query("deep", "/b/0/c~1d")
        .query("q", "/q")
        .query("arr", "/arr")
        .query(
            "d",
            MappingSource::or_default("/missing", json!([1, null, "x"])),
        )
        .header("X-H", "/h")
        .header("X-R", MappingSource::required("/r"))
        .body_field("/out/0", "/a")
        .body_field("/out/3/k", "/b")
        .body_field("/all", "")
        .body_field("/tags/-", "/t~0u")
        .output_field("/o", "/0/1")
        .output_field("/p/q", MappingSource::required("/p"))
        .input_schema(
            json!({"type": "object", "properties": {"a": {"type": "string"}},
                              "required": ["r"]}),
        )
        .output_schema(json!({"type": "object", "required": ["o"]}))
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mapping_never_panics(
        input in prop_oneof![arb_json(), shaped_input()],
        answer in prop_oneof![arb_json(), shaped_input()],
    ) {
        let action = fuzz_action();
        let raw = Bytes::from(serde_json::to_vec(&input).unwrap());
        if let Some(schema) = action.input_schema() {
            let _ = schema.violations(&input);
        }
        if let Ok(r) = action.request().render(&input, &raw) {
            prop_assert!(r.path_and_query.starts_with("/x/"));
            prop_assert!(r.path_and_query.parse::<http::uri::PathAndQuery>().is_ok(),
                "rendered path must be a valid URI: {}", r.path_and_query);
            prop_assert_eq!(r.path_and_query.matches('/').count(), 3,
                "a param value never adds a path segment");
            prop_assert!(r.body.is_some());
        }
        if let OutputPlan::Mapped(plan) = action.output()
            && let Ok(out) = plan.apply(&answer)
            && let Some(schema) = action.output_schema()
        {
            let _ = schema.violations(&out);
        }
    }

    #[test]
    fn arbitrary_pointers_never_panic(text in "(/[a-z0-9~-]{0,3}){0,4}", doc in arb_json()) {
        if let Ok(p) = genesys_gateway::data_actions::pointer::Pointer::parse_read(&text) {
            let _ = p.get(&doc);
        }
        if let Ok(p) = genesys_gateway::data_actions::pointer::Pointer::parse_target(&text) {
            let mut d = doc.clone();
            p.set(&mut d, json!(1));
            prop_assert_eq!(p.get(&d).filter(|_| !text.ends_with("/-")), if text.ends_with("/-") { None } else { Some(&json!(1)) });
        }
    }
}

#[test]
fn the_fuzzed_action_renders_for_a_valid_input() {
    // Guards the property test above: its action can succeed, so the property is exercised.
    let input = json!({"a": "a/b", "b": 7, "r": true, "q": ["x", 1], "h": "v"});
    let r = fuzz_action()
        .request()
        .render(&input, &Bytes::new())
        .unwrap();
    assert_eq!(r.path_and_query, "/x/a%2Fb/7?static=1&q=x&q=1&d=1&d=x");
}

#[test]
fn defaults_are_checked_at_load_like_literals() {
    let problems = DataAction::builder("defaults")
        .upstream("crm")
        .path("/x")
        .query("obj", MappingSource::or_default("/o", json!({"a": 1})))
        .query("nested", MappingSource::or_default("/o", json!([[1]])))
        .query("ok", MappingSource::or_default("/o", json!(["a", 1, null])))
        .header(
            "X-Break",
            MappingSource::or_default("/h", json!("line\nbreak")),
        )
        .header("X-List", MappingSource::or_default("/h", json!([1])))
        .header("X-Null", MappingSource::or_default("/h", Value::Null))
        .header("X-Ok", MappingSource::or_default("/h", json!(7)))
        .build()
        .unwrap_err();

    let found: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.path.as_str(), p.message.as_str()))
        .collect();
    let query = "a default must be a string, number, boolean or an array of them";
    let header = "a default must be a string, number or boolean valid in a header";
    assert_eq!(
        found,
        [
            ("query.obj", query),
            ("query.nested", query),
            ("headers.X-Break", header),
            ("headers.X-List", header),
            ("headers.X-Null", header),
        ]
    );

    // From the config file, with the full key path.
    let text = r#"
[genesys]
simulate = true
[[actions]]
name = "a"
upstream = "genesys"
path = "/x"
[actions.headers]
X-Tenant = { from = "/tenant", default = { nested = true } }
"#;
    let settings = genesys_gateway::config::Settings::from_toml(
        text,
        std::path::Path::new("gateway.toml"),
        std::path::Path::new("."),
        &genesys_gateway::config::Environment::default(),
    )
    .unwrap();
    let problems = genesys_gateway::data_actions::check(&settings);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "actions[0].headers.X-Tenant");
}

#[test]
fn debug_never_shows_literals_or_defaults() {
    let secrets = [
        "header-literal-1",
        "header-default-2",
        "query-literal-3",
        "query-default-4",
        "body-literal-5",
        "output-literal-6",
    ];
    let builder = DataAction::builder("withCredentials")
        .upstream("crm")
        .method(Method::POST)
        .path("/x")
        .header("X-Api-Key", MappingSource::literal(secrets[0]))
        .header(
            "X-Tenant",
            MappingSource::or_default("/t", json!(secrets[1])),
        )
        .query("key", MappingSource::literal(secrets[2]))
        .query("q", MappingSource::or_default("/q", json!(secrets[3])))
        .body_field("/token", MappingSource::literal(secrets[4]))
        .output_field("/k", MappingSource::literal(secrets[5]));
    let action = builder.clone().build().unwrap();

    for shown in [
        format!("{builder:?}"),
        format!("{action:?}"),
        format!("{action:#?}"),
    ] {
        assert!(shown.contains("withCredentials"), "{shown}");
        for secret in secrets {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    // They are still what is sent; the literal header is marked sensitive on the way.
    let r = action
        .request()
        .render(&json!({}), &Bytes::from_static(b"{}"))
        .unwrap();
    assert_eq!(r.headers["x-api-key"], secrets[0]);
    assert!(r.headers["x-api-key"].is_sensitive());
    assert!(!format!("{:?}", r.headers).contains(secrets[0]));
    assert!(r.path_and_query.contains(secrets[2]));
}
