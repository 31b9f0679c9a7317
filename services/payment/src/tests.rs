//! payment's own logic, without the rest of the lab. Pure checks are
//! called directly; requests go through `router(state)` with `oneshot`.
//! Requests that must be refused before the database get a pool that fails
//! if it is ever used; idempotency and catalogue pricing need Postgres and
//! get a database of their own. The provider is a small axum server on port
//! 0 that counts charges; RabbitMQ is never needed (requests only write the
//! outbox).

use std::net::SocketAddr;
use std::sync::Mutex;

use axum::body::Body;
use axum::http::{HeaderValue, Request};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use tracelab_db::testing::TestDatabase;

use tracelab_contract::service::ServiceName;

use tracelab_service::testing::{assert_error, call_json};

use super::*;

/// The card the fake provider declines (as the real mock does).
const DECLINED_CARD: &str = "4000000000000002";
pub(crate) const CARD: &str = "4242424242424242";

/// A payment-provider stand-in that keeps every charge request it gets.
struct Provider {
    url: String,
    charges: Arc<Mutex<Vec<Value>>>,
}

impl Provider {
    async fn start() -> Self {
        let charges = Arc::new(Mutex::new(Vec::<Value>::new()));
        let kept = charges.clone();
        let charge = move |axum::Json(body): axum::Json<Value>| {
            let n = {
                let mut kept = kept.lock().unwrap();
                kept.push(body.clone());
                kept.len()
            };
            async move {
                if body["card"] == DECLINED_CARD {
                    let error = json!({"error": {"code": "card_declined",
                        "decline_code": "generic_decline", "message": "Your card was declined."}});
                    (StatusCode::PAYMENT_REQUIRED, axum::Json(error))
                } else {
                    (
                        StatusCode::OK,
                        axum::Json(json!({"id": format!("ch_test_{n}")})),
                    )
                }
            }
        };
        let app = Router::new().route("/v1/charges", post(charge));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, charges }
    }

    fn charges(&self) -> Vec<Value> {
        self.charges.lock().unwrap().clone()
    }
}

pub(crate) fn state(pool: PgPool, database_url: &str, provider_url: &str) -> AppState {
    let faults = FaultRegistry::new(ServiceName::Payment);
    AppState {
        faults: faults.clone(),
        store: Store {
            pool,
            db: DbTarget::from_url(database_url),
        },
        provider: ProviderClient::new(provider_url, Duration::from_secs(5)).unwrap(),
        relay_wakeup: Arc::new(Notify::new()),
        publisher: Arc::new(tokio::sync::Mutex::new(relay::Publisher::unconnected(
            "amqp://guest:guest@127.0.0.1:1/%2f",
            "tracelab.test",
            faults,
        ))),
        settings: Settings::defaults(),
    }
}

/// A state whose database and provider fail if they are ever used: a
/// request refused by validation never gets that far.
fn state_without_backends() -> AppState {
    let url = "postgres://postgres@127.0.0.1:1/unreachable";
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(url)
        .unwrap();
    state(pool, url, "http://127.0.0.1:1")
}

/// A migrated database of its own and a fake provider.
async fn state_with_database() -> (AppState, TestDatabase, Provider) {
    let db = TestDatabase::create().await;
    let provider = Provider::start().await;
    let state = state(db.pool().clone(), db.url(), &provider.url);
    (state, db, provider)
}

/// `POST /payments` through the full router.
pub(crate) async fn pay(state: &AppState, key: Option<&str>, body: &str) -> (StatusCode, Value) {
    let mut request = Request::post("/payments").header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    call(state, request.body(Body::from(body.to_string())).unwrap()).await
}

async fn call(state: &AppState, request: Request<Body>) -> (StatusCode, Value) {
    call_json(router(state.clone(), &W3cHarness::off()), request).await
}

fn code(result: Result<impl std::fmt::Debug, ApiError>) -> &'static str {
    let err = result.unwrap_err();
    assert_eq!(err.status, StatusCode::BAD_REQUEST, "{err}");
    err.code
}

#[test]
fn idempotency_keys_are_required_visible_and_bounded() {
    let with = |value: HeaderValue| {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", value);
        idempotency_key(&headers)
    };
    assert_eq!(
        code(idempotency_key(&HeaderMap::new())),
        "missing_idempotency_key"
    );
    assert_eq!(
        with(HeaderValue::from_static("  k-1 ")).unwrap(),
        "k-1",
        "surrounding blanks are not part of the key"
    );
    assert_eq!(
        code(with(HeaderValue::from_static("   "))),
        "invalid_idempotency_key"
    );
    assert_eq!(
        code(with(HeaderValue::from_bytes("café".as_bytes()).unwrap())),
        "invalid_idempotency_key"
    );
    let longest = "k".repeat(255);
    assert_eq!(
        with(HeaderValue::from_str(&longest).unwrap()).unwrap(),
        longest
    );
    assert_eq!(
        code(with(HeaderValue::from_str(&"k".repeat(256)).unwrap())),
        "invalid_idempotency_key"
    );
}

#[test]
fn cards_are_normalised_to_12_to_19_digits() {
    assert_eq!(
        normalise_card("4242 4242-4242 4242").unwrap(),
        "4242424242424242"
    );
    assert_eq!(normalise_card("424242424242").unwrap(), "424242424242");
    assert_eq!(
        normalise_card("4242424242424242424").unwrap(),
        "4242424242424242424"
    );
    for bad in [
        "",
        "42424242424",          // 11 digits
        "42424242424242424242", // 20 digits
        "12ab",
        "4242424242424242x",
        "４２４２４２４２４２４２４２４２", // full-width digits
        "4242.4242.4242.4242",
    ] {
        assert_eq!(code(normalise_card(bad)), "invalid_card", "{bad:?}");
    }
}

#[test]
fn amounts_and_currencies_given_as_is_are_checked() {
    assert_eq!(price_amount(1, None).unwrap(), (1, "JPY".to_string()));
    assert_eq!(
        price_amount(10_000_000, Some("usd")).unwrap(),
        (10_000_000, "USD".to_string())
    );
    assert_eq!(price_amount(5, Some("EUR")).unwrap().1, "EUR");
    for amount in [0, -5, 10_000_001, i64::MIN, i64::MAX] {
        assert_eq!(
            code(price_amount(amount, None)),
            "invalid_amount",
            "{amount}"
        );
    }
    for currency in ["XXX", "", "JPYY", "円"] {
        assert_eq!(
            code(price_amount(5, Some(currency))),
            "invalid_currency",
            "{currency:?}"
        );
    }
}

#[test]
fn items_are_checked_and_priced_from_the_catalogue() {
    let line = |product_id, quantity| ItemRequest {
        product_id,
        quantity,
    };
    let catalogue: BTreeMap<i64, (i64, String)> = [
        (1, (2480, "JPY".to_string())),
        (3, (980, "JPY".to_string())),
        (7, (15, "USD".to_string())),
    ]
    .into();

    let items = [line(1, 2), line(3, 1)];
    check_items(&items).unwrap();
    let (total, currency, priced) = price_items(&items, &catalogue).unwrap();
    assert_eq!((total, currency.as_str()), (2 * 2480 + 980, "JPY"));
    let lines: Vec<_> = priced
        .iter()
        .map(|p| (p.product_id, p.quantity, p.unit_price))
        .collect();
    assert_eq!(lines, [(1, 2, 2480), (3, 1, 980)]);

    assert_eq!(code(check_items(&[])), "invalid_items");
    let many: Vec<_> = (1..=21).map(|id| line(id, 1)).collect();
    assert_eq!(code(check_items(&many)), "invalid_items");
    check_items(&many[..20]).unwrap();
    assert_eq!(code(check_items(&[line(1, 0)])), "invalid_quantity");
    assert_eq!(code(check_items(&[line(1, 100)])), "invalid_quantity");
    check_items(&[line(1, 99)]).unwrap();

    assert_eq!(
        code(price_items(&[line(1, 1), line(99, 1)], &catalogue)),
        "unknown_product"
    );
    assert_eq!(
        code(price_items(
            &[line(1, 1), line(3, 1), line(1, 2)],
            &catalogue
        )),
        "duplicate_product"
    );
    assert_eq!(
        code(price_items(&[line(1, 1), line(7, 1)], &catalogue)),
        "mixed_currency"
    );
}

#[tokio::test]
async fn requests_refused_before_the_database_get_the_json_error_shape() {
    let state = state_without_backends();
    let ok = |extra: &str| format!(r#"{{"user_id": "u-1", "card": "{CARD}"{extra}}}"#);
    let cases: Vec<(Option<&str>, String, StatusCode, &str)> = vec![
        (
            Some("k"),
            "{\"user_id\": ".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Some("k"),
            r#"{"card": "4242424242424242", "amount": 5}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            Some("k"),
            ok(r#", "amount": 5, "currncy": "USD""#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            Some("k"),
            ok(r#", "amount": "5""#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            None,
            ok(r#", "amount": 5"#),
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
        ),
        (
            Some(" "),
            ok(r#", "amount": 5"#),
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
        ),
        (
            Some("k"),
            r#"{"user_id": "u-1", "card": "12ab", "amount": 5}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_card",
        ),
        (
            Some("k"),
            format!(r#"{{"user_id": " ", "card": "{CARD}", "amount": 5}}"#),
            StatusCode::BAD_REQUEST,
            "invalid_user",
        ),
        (
            Some("k"),
            ok(r#", "amount": -5, "currency": "JPY""#),
            StatusCode::BAD_REQUEST,
            "invalid_amount",
        ),
        (
            Some("k"),
            ok(r#", "amount": 5, "currency": "XXX""#),
            StatusCode::BAD_REQUEST,
            "invalid_currency",
        ),
        (Some("k"), ok(""), StatusCode::BAD_REQUEST, "invalid_order"),
        (
            Some("k"),
            ok(r#", "amount": 5, "items": [{"product_id": 1, "quantity": 1}]"#),
            StatusCode::BAD_REQUEST,
            "invalid_order",
        ),
        (
            Some("k"),
            ok(r#", "items": []"#),
            StatusCode::BAD_REQUEST,
            "invalid_items",
        ),
        (
            Some("k"),
            ok(r#", "items": [{"product_id": 1, "quantity": 0}]"#),
            StatusCode::BAD_REQUEST,
            "invalid_quantity",
        ),
    ];
    for (key, body, expected, code) in cases {
        let (status, answer) = pay(&state, key, &body).await;
        assert_error(status, &answer, expected, code);
    }

    let (status, answer) = call(
        &state,
        Request::get("/orders/not-a-uuid?user_id=u-1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_order_id");
}

#[tokio::test]
async fn the_same_key_charges_once_and_replays_the_first_payment() {
    let (state, _db, provider) = state_with_database().await;
    let body =
        format!(r#"{{"user_id": "u-1", "card": "{CARD}", "amount": 4980, "currency": "jpy"}}"#);

    let (status, first) = pay(&state, Some("key-1"), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["currency"], "JPY");
    assert_eq!(first["idempotent_replay"], false);
    let (status, again) = pay(&state, Some("key-1"), &body).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["idempotent_replay"], true);
    for field in ["order_id", "payment_id", "transaction_id"] {
        assert_eq!(again[field], first[field], "{field}");
    }
    assert_eq!(provider.charges().len(), 1, "one key, one charge");

    // The same key for a different checkout is a client bug, not a replay.
    let other = format!(r#"{{"user_id": "u-1", "card": "{CARD}", "amount": 5000}}"#);
    let (status, answer) = pay(&state, Some("key-1"), &other).await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    assert_eq!(provider.charges().len(), 1);

    // Keys belong to a user: another user's same key is another checkout.
    let body = format!(r#"{{"user_id": "u-2", "card": "{CARD}", "amount": 4980}}"#);
    let (status, answer) = pay(&state, Some("key-1"), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_ne!(answer["order_id"], first["order_id"]);
    assert_eq!(provider.charges().len(), 2);
    // The provider's own idempotency key is the order, so its retries are safe too.
    let charges = provider.charges();
    assert_eq!(charges[0]["metadata"]["order_id"], first["order_id"]);
    assert_eq!(charges[0]["amount"], 4980);
    assert_eq!(charges[0]["currency"], "jpy");
}

#[tokio::test]
async fn a_declined_checkout_stays_declined_for_its_key() {
    let (state, _db, provider) = state_with_database().await;
    let body = format!(r#"{{"user_id": "u-1", "card": "{DECLINED_CARD}", "amount": 1200}}"#);
    let (status, first) = pay(&state, Some("declined-1"), &body).await;
    assert_error(
        status,
        &first,
        StatusCode::PAYMENT_REQUIRED,
        "card_declined",
    );
    assert_eq!(first["error"]["decline_code"], "generic_decline");
    let (status, again) = pay(&state, Some("declined-1"), &body).await;
    assert_error(
        status,
        &again,
        StatusCode::PAYMENT_REQUIRED,
        "card_declined",
    );
    assert_eq!(again["error"]["idempotent_replay"], true);
    assert_eq!(again["error"]["order_id"], first["error"]["order_id"]);
    assert_eq!(provider.charges().len(), 1);
}

#[tokio::test]
async fn a_checkout_in_progress_is_not_charged_twice() {
    let (state, _db, provider) = state_with_database().await;
    // Another request has created the order and is charging it right now.
    state
        .store
        .create_order(&NewOrder {
            id: Uuid::new_v4(),
            user_id: "u-1".into(),
            idempotency_key: "busy-1".into(),
            amount: 300,
            currency: "JPY".into(),
            items: Vec::new(),
            trace_context: Default::default(),
        })
        .await
        .unwrap();
    let body = format!(r#"{{"user_id": "u-1", "card": "{CARD}", "amount": 300}}"#);
    let (status, answer) = pay(&state, Some("busy-1"), &body).await;
    assert_error(status, &answer, StatusCode::CONFLICT, "payment_in_progress");
    assert!(provider.charges().is_empty());
}

#[tokio::test]
async fn items_are_priced_from_the_seeded_catalogue() {
    let (state, db, provider) = state_with_database().await;
    let prices: BTreeMap<i64, i64> =
        sqlx::query_as::<_, (i64, i64)>("SELECT id, price FROM products WHERE id IN (1, 3)")
            .fetch_all(db.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    let expected = 2 * prices[&1] + prices[&3];

    let body = format!(
        r#"{{"user_id": "u-1", "card": "{CARD}", "items": [{{"product_id": 1, "quantity": 2}}, {{"product_id": 3, "quantity": 1}}]}}"#
    );
    let (status, answer) = pay(&state, Some("items-1"), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["amount"], expected);
    assert_eq!(answer["currency"], "JPY");
    assert_eq!(provider.charges()[0]["amount"], expected);

    let unknown = format!(
        r#"{{"user_id": "u-1", "card": "{CARD}", "items": [{{"product_id": 99999, "quantity": 1}}]}}"#
    );
    let (status, answer) = pay(&state, Some("items-2"), &unknown).await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "unknown_product");

    let priced_elsewhere = format!(
        r#"{{"user_id": "u-1", "card": "{CARD}", "currency": "USD", "items": [{{"product_id": 1, "quantity": 1}}]}}"#
    );
    let (status, answer) = pay(&state, Some("items-3"), &priced_elsewhere).await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_currency");
    assert_eq!(provider.charges().len(), 1);
}
