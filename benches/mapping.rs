//! Map + validate for a realistic data action: the per-request work the gateway does on top of
//! the upstream call. `cargo bench --bench mapping`.

use bytes::Bytes;
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use genesys_gateway::config::MappingSource;
use genesys_gateway::data_actions::DataAction;
use genesys_gateway::data_actions::mapping::OutputPlan;
use http::Method;
use serde_json::{Value, json};

/// A lookup a contact-center flow typically makes: customer by phone number, a few fields out.
fn action() -> DataAction {
    DataAction::builder("lookupCustomer")
        .upstream("crm")
        .method(Method::POST)
        .path("/v2/customers/{tenant}/search")
        .param("tenant", "/tenant")
        .query("fields", MappingSource::literal("profile,tier"))
        .header(
            "X-Channel",
            MappingSource::or_default("/channel", json!("voice")),
        )
        .body_field("/phone", MappingSource::required("/ani"))
        .body_field("/language", "/language")
        .output_field("/customerId", MappingSource::required("/data/0/id"))
        .output_field("/name", "/data/0/profile/displayName")
        .output_field(
            "/tier",
            MappingSource::or_default("/data/0/tier", json!("standard")),
        )
        .output_field("/openCases", "/data/0/stats/openCases")
        .input_schema(json!({
            "type": "object",
            "required": ["tenant", "ani"],
            "properties": {
                "tenant": {"type": "string", "minLength": 1, "maxLength": 64},
                "ani": {"type": "string", "pattern": "^\\+[1-9][0-9]{6,14}$"},
                "language": {"type": "string"},
                "channel": {"enum": ["voice", "chat", "sms"]}
            }
        }))
        .output_schema(json!({
            "type": "object",
            "required": ["customerId", "tier"],
            "properties": {
                "customerId": {"type": "string"},
                "name": {"type": "string"},
                "tier": {"type": "string"},
                "openCases": {"type": "integer", "minimum": 0}
            }
        }))
        .build()
        .expect("valid action")
}

fn input() -> Bytes {
    Bytes::from_static(br#"{"tenant":"acme","ani":"+14155550199","language":"en-US"}"#)
}

fn answer() -> Bytes {
    Bytes::from(
        json!({"data": [{"id": "c-81723", "tier": "gold",
            "profile": {"displayName": "Jane Doe", "email": "jane@example.com", "since": "2019-04-01"},
            "stats": {"openCases": 2, "lifetimeValue": 18250.5}}],
            "page": {"size": 1, "total": 1}})
        .to_string(),
    )
}

fn bench(c: &mut Criterion) {
    let action = action();
    let raw_input = input();
    let raw_answer = answer();
    let OutputPlan::Mapped(output) = action.output() else {
        unreachable!("the action maps its output")
    };
    let in_schema = action.input_schema().expect("input schema");
    let out_schema = action.output_schema().expect("output schema");

    let mut group = c.benchmark_group("data_action");
    group.throughput(Throughput::Elements(1));
    group.bench_function("request: parse + validate + render", |b| {
        b.iter(|| {
            let input: Value = serde_json::from_slice(black_box(&raw_input)).unwrap();
            assert!(in_schema.is_valid(&input));
            black_box(action.request().render(&input, &raw_input).unwrap())
        });
    });
    group.bench_function("response: parse + map + validate + serialize", |b| {
        b.iter(|| {
            let answer: Value = serde_json::from_slice(black_box(&raw_answer)).unwrap();
            let out = output.apply(&answer).unwrap();
            assert!(out_schema.violations(&out).is_empty());
            black_box(serde_json::to_vec(&out).unwrap())
        });
    });
    group.bench_function("whole hop (both sides)", |b| {
        b.iter(|| {
            let input: Value = serde_json::from_slice(black_box(&raw_input)).unwrap();
            assert!(in_schema.is_valid(&input));
            let req = action.request().render(&input, &raw_input).unwrap();
            let answer: Value = serde_json::from_slice(black_box(&raw_answer)).unwrap();
            let out = output.apply(&answer).unwrap();
            assert!(out_schema.violations(&out).is_empty());
            black_box((req, serde_json::to_vec(&out).unwrap()))
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
