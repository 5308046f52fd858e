use crate::test_backend::StoreBackend;
use crate::Request;

fn call(backend: &StoreBackend, method: &str, path: &str, query: &[(&str, &str)]) -> crate::Response {
    let query = query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let request = Request { method: method.into(), path: path.into(), query, ..Request::default() };
    crate::route(backend, &request)
}

fn body(response: &crate::Response) -> serde_json::Value {
    response.body.clone()
}

const LETTER_A: &str = r#"{"id":"m1-aa","topic":"work","subscriber":{"artifact":"g:a:1.0.0","method":"on"},"message_id":"m1","publisher":"api","published_at_ms":1,"attempts":3,"last_error":"500","failed_at_ms":2,"payload_base64":"aGk="}"#;
const LETTER_B: &str = r#"{"id":"m2-bb","topic":"news","subscriber":{"artifact":"g:a:1.0.0","method":"on"},"message_id":"m2","publisher":"api","published_at_ms":1,"attempts":3,"last_error":"500","failed_at_ms":2,"payload_base64":""}"#;

#[test]
fn dead_letters_list_filter_show_and_delete() {
    let backend = StoreBackend::with(&[("deadletters/m1-aa", LETTER_A), ("deadletters/m2-bb", LETTER_B)]);
    let all = call(&backend, "GET", "api/dead-letters", &[]);
    assert_eq!(all.status, 200);
    assert_eq!(body(&all)["dead_letters"].as_array().unwrap().len(), 2);
    let work = body(&call(&backend, "GET", "api/dead-letters", &[("topic", "work")]));
    assert_eq!(work["dead_letters"][0]["id"], "m1-aa");
    assert_eq!(work["dead_letters"].as_array().unwrap().len(), 1);
    assert_eq!(call(&backend, "GET", "api/dead-letters", &[("topic", "no/such")]).status, 400);
    let one = call(&backend, "GET", "api/dead-letters/m1-aa", &[]);
    assert_eq!(body(&one)["attempts"], 3);
    assert_eq!(call(&backend, "GET", "api/dead-letters/nope", &[]).status, 404);
    assert_eq!(call(&backend, "DELETE", "api/dead-letters/m1-aa", &[]).status, 200);
    assert_eq!(call(&backend, "GET", "api/dead-letters/m1-aa", &[]).status, 404);
    assert_eq!(call(&backend, "DELETE", "api/dead-letters/m1-aa", &[]).status, 404);
}

#[test]
fn topics_and_publish_need_a_messaging_node_and_check_the_topic() {
    let backend = StoreBackend::default();
    assert_eq!(call(&backend, "GET", "api/topics", &[]).status, 503);
    assert_eq!(call(&backend, "POST", "api/topics/work/messages", &[]).status, 503);
    assert_eq!(call(&backend, "POST", "api/topics/a b/messages", &[]).status, 400);
    assert_eq!(call(&backend, "POST", "api/dead-letters/m1-aa/replay", &[]).status, 503);
    assert_eq!(call(&backend, "PUT", "api/topics/work/messages", &[]).status, 405);
    assert_eq!(call(&backend, "GET", "api/topics/work/messages", &[]).status, 405);
}
