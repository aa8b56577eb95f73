//! The OpenAPI document: served as committed, and requests generated from
//! it never get a 5xx.

use super::*;

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one_and_names_every_route() -> Result<()> {
    let h = Harness::new().await?;
    let served: Value = h.http.get(format!("{}/v1/openapi.json", h.api)).send().await?.json().await?;
    let committed: Value = serde_json::from_str(include_str!("../../openapi.json"))?;
    assert_eq!(
        served, committed,
        "services/gateway/openapi.json is stale: run `cargo run -p landlord-gateway -- openapi > services/gateway/openapi.json`"
    );
    assert_eq!(include_str!("../../openapi.json"), landlord_gateway::openapi::pretty());
    assert_eq!(served["openapi"], "3.1.0");
    let paths: Vec<&String> = served["paths"].as_object().context("paths")?.keys().collect();
    // Every documented path answers something other than "no such endpoint".
    for path in paths {
        let concrete = path.replace("{id_or_key}", "acme").replace("{key}", "acme");
        for method in served["paths"][path].as_object().context("methods")?.keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())?;
            let request = h.http.request(method.clone(), format!("{}{concrete}", h.api));
            let answer = Answer::of(request.send().await?).await?;
            assert_ne!(answer.body["detail"], "no such endpoint", "{method} {path}");
        }
    }
    Ok(())
}

/// Strings a generated request uses: valid and invalid keys, plans, tiers,
/// emails, and worse.
const STRINGS: &[&str] =
    &["", "acme", "Acme", "a--b", "1abc", "ab", "x@y.test", "ACTIVE", "standard", "silo", "ü\u{0}\"'", "admin"];

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    /// A value of any kind.
    fn value(&mut self, depth: u32) -> Value {
        match self.next() % if depth > 2 { 5 } else { 7 } {
            0 => Value::Null,
            1 => json!(self.next().is_multiple_of(3)),
            2 => json!((self.next() % 1000) as i64 - 500),
            3 | 4 => json!(self.pick(STRINGS).repeat((self.next() % 3 + 1) as usize)),
            5 => Value::Array((0..self.next() % 3).map(|_| self.value(depth + 1)).collect()),
            _ => {
                const KEYS: &[&str] =
                    &["key", "display_name", "plan", "tier", "admin", "email", "domains", "labels", "reason", "type"];
                let mut map = serde_json::Map::new();
                for _ in 0..self.next() % 6 {
                    map.insert(self.pick(KEYS).to_owned(), self.value(depth + 1));
                }
                Value::Object(map)
            }
        }
    }
}

impl Rng {
    fn index(&mut self, len: usize) -> usize {
        (self.next() % len.max(1) as u64) as usize
    }

    /// A value `schema` describes, as the document's generated schemas say
    /// it (`$ref`s into `#/components/schemas/`, `anyOf`/`oneOf`, `enum`,
    /// `type` lists such as `["string", "null"]`, required and optional
    /// properties), but now and then, at any depth, a value of any kind.
    fn instance(&mut self, document: &Value, schema: &Value, depth: u32) -> Value {
        if depth > 8 || self.next().is_multiple_of(16) {
            return self.value(2);
        }
        if let Some(reference) = schema["$ref"].as_str() {
            let target = reference.strip_prefix('#').and_then(|pointer| document.pointer(pointer));
            return self.instance(document, target.unwrap_or(&Value::Bool(true)), depth + 1);
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(alternatives) = schema[keyword].as_array().filter(|a| !a.is_empty()) {
                let alternative = &alternatives[self.index(alternatives.len())];
                return self.instance(document, alternative, depth + 1);
            }
        }
        if let Some(values) = schema["enum"].as_array().filter(|v| !v.is_empty()) {
            return values[self.index(values.len())].clone();
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(one) => vec![one.as_str()],
            Value::Array(several) => several.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        match types.get(self.index(types.len())).copied() {
            Some("object") => {
                let required: Vec<&str> =
                    schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                let mut map = serde_json::Map::new();
                for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                    if required.contains(&name.as_str()) || self.next().is_multiple_of(2) {
                        map.insert(name.clone(), self.instance(document, property, depth + 1));
                    }
                }
                if schema["additionalProperties"].is_object() {
                    for _ in 0..self.next() % 3 {
                        let name = self.pick(STRINGS).to_owned();
                        map.insert(name, self.instance(document, &schema["additionalProperties"], depth + 1));
                    }
                }
                Value::Object(map)
            }
            Some("array") => {
                (0..self.next() % 3).map(|_| self.instance(document, &schema["items"], depth + 1)).collect()
            }
            Some("string") => json!(self.pick(STRINGS)),
            Some("integer" | "number") => json!((self.next() % 1000) as i64 - 500),
            Some("boolean") => json!(self.next().is_multiple_of(2)),
            Some("null") => Value::Null,
            // No type: anything goes (`true`, or a body taken verbatim).
            _ => self.value(1),
        }
    }
}

#[tokio::test]
async fn requests_generated_from_the_openapi_document_never_get_a_5xx() -> Result<()> {
    let h = Harness::new().await?;
    h.create("acme", "standard", json!({})).await?;
    let document = landlord_gateway::openapi::document();
    let paths = document["paths"].as_object().context("paths")?;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    const SEGMENTS: &[&str] = &["acme", "ACME", "a%20b", "%F0%9F%92%A9", "00000000-0000-0000-0000-000000000000", "x"];
    let mut sent = 0;
    // Bodies built from the CreateTenant schema that the handler read and
    // judged (rather than refusing them as malformed).
    let mut read = 0;
    for (path, methods) in paths {
        for (method, operation) in methods.as_object().context("methods")? {
            for _ in 0..25 {
                let concrete = path.replace("{id_or_key}", rng.pick(SEGMENTS)).replace("{key}", rng.pick(SEGMENTS));
                let mut query = Vec::new();
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    if parameter["in"] == "query" && rng.next().is_multiple_of(2) {
                        let value = if rng.next().is_multiple_of(2) {
                            rng.instance(&document, &parameter["schema"], 0)
                        } else {
                            rng.value(0)
                        };
                        let value = match value {
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        query.push((parameter["name"].as_str().unwrap_or("").to_owned(), value));
                    }
                }
                let encoded: Vec<String> = query.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
                let url = format!("{}{concrete}?{}", h.api, encoded.join("&"));
                let schema = operation.pointer("/requestBody/content/application~1json/schema");
                let body = match schema {
                    Some(schema) if !rng.next().is_multiple_of(3) => rng.instance(&document, schema, 0),
                    _ => rng.value(0),
                };
                let mut request = match method.as_str() {
                    "get" => h.http.get(&url),
                    other => h
                        .http
                        .request(reqwest::Method::from_bytes(other.to_uppercase().as_bytes())?, &url)
                        .header("Idempotency-Key", format!("fuzz-{}", rng.next() % 4))
                        .json(&body),
                };
                if !rng.next().is_multiple_of(4) {
                    request = request.bearer_auth(h.admin());
                }
                let response = request.send().await?;
                let status = response.status();
                assert!(!status.is_server_error(), "{method} {url} {query:?} → {status}: {:?}", response.text().await);
                if path == "/v1/tenants" && method == "post" && [202, 409, 422].contains(&status.as_u16()) {
                    read += 1;
                }
                sent += 1;
            }
        }
    }
    assert!(sent >= 200, "{sent}");
    assert!(read > 0, "no generated body got past the parsing of POST /v1/tenants");
    Ok(())
}
