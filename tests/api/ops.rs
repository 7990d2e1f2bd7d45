//! The ops listener: `/metrics` and `/admin/*` answer there and not on the public port, and
//! the HTTP method label stays bounded.

use crate::helpers::spawn_app;

#[actix_web::test]
async fn metrics_are_served_on_the_ops_port_and_not_on_the_public_port() {
    let app = spawn_app().await;
    assert_eq!(app.get("/metrics").await.status(), 404);
    let res = app.ops_get("/metrics").await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("iace_live_calls"), "{text}");
    // The ops listener serves nothing of the public API.
    assert_eq!(app.ops_get("/health").await.status(), 404);
}

#[actix_web::test]
async fn random_http_methods_do_not_grow_metrics() {
    let app = spawn_app().await;
    for n in 0..5 {
        let method = reqwest::Method::from_bytes(format!("BREW{n}").as_bytes()).unwrap();
        let res = app
            .client
            .request(method, format!("{}/health", app.address))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
    }
    let text = app.ops_get("/metrics").await.text().await.unwrap();
    assert!(!text.contains("BREW"), "{text}");
    let other: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("iace_http_requests_total{") && l.contains(r#"method="other""#))
        .collect();
    assert_eq!(other.len(), 1, "{other:?}");
    assert!(other[0].ends_with(" 5"), "{other:?}");
}
