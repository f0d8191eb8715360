//! No `Debug` of a settings type, client or loaded table, and no error,
//! shows a credential floe holds.

use floe::rest::RestClient;
use floe_catalog::{AuthConfig, Secret};

use crate::common::Env;

const PLANTED: [&str; 3] = ["client-s3cret-7f3a", "bearer-tok-91c2", "s3-key-5d0e"];

fn assert_clean(what: &str, text: &str) {
    for secret in PLANTED {
        assert!(!text.contains(secret), "{what} shows {secret}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_debug_or_error_shows_a_secret() {
    let env = Env::with_auth(AuthConfig {
        token: Some(Secret::new(PLANTED[1])),
        client: Some(("floe".into(), Secret::new(PLANTED[0]))),
        token_ttl: std::time::Duration::from_secs(60),
    })
    .await;
    let job = r#"
[[job]]
name = "j"
table = "bronze.j"
source = { path = "data/{date}.ndjson", format = "ndjson" }
event_time = { kind = "offset", column = "t" }
columns = [ { name = "v", type = "double" } ]
"#;
    let p = env.pipeline_with(
        job,
        &format!(
            "credential = \"floe:{}\"\nproperties = {{ \"s3.secret-access-key\" = \"{}\", \"s3.session-token\" = \"{}\" }}",
            PLANTED[0], PLANTED[2], PLANTED[1]
        ),
    );
    assert_clean("Pipeline", &format!("{p:?}"));
    assert_clean("CatalogSettings", &format!("{:?}", p.catalog));

    let client = RestClient::connect(&p.catalog).await.expect("connects");
    assert_clean("RestClient", &format!("{client:?}"));
    client
        .ensure_namespace(&["bronze".to_string()])
        .await
        .expect("namespace");
    let mut bearer = p.catalog.clone();
    bearer.credential = None;
    bearer.token = Some(Secret::new(PLANTED[1]));
    let client = RestClient::connect(&bearer).await.expect("token works");
    assert_clean("RestClient with a token", &format!("{client:?}"));

    // Refused credentials: the error names the problem, not the secret.
    for (token, credential) in [
        (Some(format!("{}x", PLANTED[1])), None),
        (None, Some(format!("floe:{}x", PLANTED[0]))),
        (None, Some(PLANTED[0].to_string())),
    ] {
        let mut wrong = p.catalog.clone();
        wrong.token = token.map(Secret::new);
        wrong.credential = credential.map(Secret::new);
        let err = RestClient::connect(&wrong).await.expect_err("refused");
        assert_clean("a refused connection's error", &format!("{err} / {err:?}"));
    }
    let (_, outcome) =
        crate::common::ingest(&p, &crate::common::request("2024-01-01", "2024-01-01", "r")).await;
    if let Err(e) = outcome {
        assert_clean("an ingest error", &format!("{e} / {e:?}"));
    }
}
