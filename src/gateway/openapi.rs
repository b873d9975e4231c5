//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the
//! code: operations from the handlers' `#[utoipa::path]`, bodies from the
//! types in `body.rs`, query parameters from the tables the parser uses
//! (`params.rs`), and error bodies from [`ErrorCode`], one schema per HTTP
//! status listing exactly the codes that status carries.
//!
//! Two things depend on the configuration, so [`document`] adds them from
//! the settings the router is built with, and each deployment serves the
//! document of its own configuration.
//!
//! Declared extra dimensions (`extra_dimensions`) are query parameters of
//! both count endpoints and members of their `filter`, named by the
//! configuration; the drift tests below check it with extra dimensions
//! declared and without.
//!
//! With API tokens configured (`api_token_sha256`), every operation that
//! needs one lists the `bearer_token` security requirement and its 401 and
//! 403 answers; the probes and this document never do (`access.rs`). The
//! request limits (`limits.rs`) add a 414 to every operation and a 503 to
//! every one they can shed or time out.

use super::access::{ApiAccess, SECURITY_SCHEME};
use super::limits::PROBE_PATHS;
use super::params::{
    extra_dimension_description, ErrorCode, Param, AGGREGATED_COUNT_PARAMS, LATEST_MS,
    POPULAR_PARAMS, SERIES_PARAMS,
};
use super::AD_ID_PATTERN;
use adclick_actors::dimension::{ExtraDimension, MAX_VALUE_BYTES};
use adclick_actors::PipelineSettings;
use axum::http::StatusCode;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required};
use utoipa::{IntoParams, OpenApi, ToResponse};

/// The whole document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "adclick",
        description = "Real-time, exactly-once ad-click counts per ad and minute, in event time. \
            Ranges are half-open [from, to) and floored to minutes. Unknown or repeated query \
            parameters are refused with 400. Every error is {\"code\": ..., \"error\": ...}."
    ),
    paths(
        super::live::page,
        super::aggregated_count,
        super::series,
        super::popular,
        super::live::status,
        super::live::live,
        super::healthz,
        super::readyz,
        super::metrics,
        super::openapi_json,
        super::docs,
    ),
    components(responses(
        BadRequest,
        ServerError,
        Unavailable,
        Unauthorized,
        Forbidden,
        QueryTooLong
    ))
)]
pub struct ApiDoc;

/// The operations that take the filter's query parameters.
pub const FILTERED_PATHS: [&str; 3] = [
    "/v1/ads/{ad_id}/aggregated_count",
    "/v1/ads/{ad_id}/series",
    "/v1/ads/popular",
];

/// The document as served for these settings: pretty JSON. The declared
/// extra dimensions of `settings` become query parameters of the
/// [`FILTERED_PATHS`] (after the built-in ones, in configuration order) and
/// properties of the `FilterBody` schema; the operations `access` protects
/// require a bearer token.
pub fn document(
    settings: &PipelineSettings,
    access: &ApiAccess,
) -> Result<String, serde_json::Error> {
    let mut doc = ApiDoc::openapi();
    add_limits_and_access(&mut doc, access);
    let extras = &settings.extra_dimensions;
    if !extras.is_empty() {
        for path in FILTERED_PATHS {
            let operation = doc
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.get.as_mut())
                .expect("every filtered path is a documented GET");
            operation
                .parameters
                .get_or_insert_with(Vec::new)
                .extend(extras.iter().map(extra_parameter));
        }
        let filter = doc
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut("FilterBody"));
        let Some(RefOr::T(Schema::Object(filter))) = filter else {
            panic!("FilterBody is an object schema of the document");
        };
        for dim in extras {
            filter
                .properties
                .insert(dim.name.clone(), extra_value_schema().into());
        }
    }
    doc.to_pretty_json()
}

/// The methods of a path item that are documented.
fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// What the request limits and the token check can answer, on every
/// operation they apply to, and the bearer scheme.
fn add_limits_and_access(doc: &mut utoipa::openapi::OpenApi, access: &ApiAccess) {
    let scheme = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some(
            "A token whose SHA-256 digest is in the service's `api_token_sha256`. \
             Needed only where an operation lists it, and only when tokens are configured.",
        ))
        .build();
    if let Some(components) = doc.components.as_mut() {
        components.add_security_scheme(SECURITY_SCHEME, SecurityScheme::Http(scheme));
    }
    let reference = |name: &str| RefOr::Ref(Ref::from_response_name(name));
    for (path, item) in doc.paths.paths.iter_mut() {
        let probe = PROBE_PATHS.contains(&path.as_str());
        let protected = access.protects(path);
        for operation in operations_mut(item) {
            let responses = &mut operation.responses.responses;
            responses.insert("414".into(), reference("QueryTooLong"));
            if !probe {
                responses
                    .entry("503".into())
                    .or_insert_with(|| reference("Unavailable"));
            }
            if protected {
                responses.insert("401".into(), reference("Unauthorized"));
                responses.insert("403".into(), reference("Forbidden"));
                operation.security = Some(vec![SecurityRequirement::new(
                    SECURITY_SCHEME,
                    Vec::<String>::new(),
                )]);
            }
        }
    }
}

/// A value of an extra dimension: what the parser accepts (1 to
/// [`MAX_VALUE_BYTES`] bytes), and what answers echo.
fn extra_value_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_VALUE_BYTES))
}

/// The query parameter of a declared extra dimension.
fn extra_parameter(dim: &ExtraDimension) -> RefOr<Parameter> {
    ParameterBuilder::new()
        .name(dim.name.clone())
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(extra_dimension_description(&dim.name)))
        .schema(Some(extra_value_schema()))
        .build()
        .into()
}

/// The query parameters of `aggregated_count`, from [`AGGREGATED_COUNT_PARAMS`].
pub struct AggregatedCountQuery;

impl IntoParams for AggregatedCountQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        AGGREGATED_COUNT_PARAMS
            .iter()
            .map(query_parameter)
            .collect()
    }
}

/// The query parameters of `series`, from [`SERIES_PARAMS`].
pub struct SeriesQuery;

impl IntoParams for SeriesQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        SERIES_PARAMS.iter().map(query_parameter).collect()
    }
}

/// The query parameters of `popular`, from [`POPULAR_PARAMS`].
pub struct PopularQuery;

impl IntoParams for PopularQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        POPULAR_PARAMS.iter().map(query_parameter).collect()
    }
}

/// The path parameter `ad_id`.
pub struct AdIdPath;

impl IntoParams for AdIdPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(AD_ID_PATTERN));
        vec![ParameterBuilder::new()
            .name("ad_id")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some("The ad: 1 to 64 of A-Z, a-z, 0-9, _ and -."))
            .schema(Some(schema))
            .build()]
    }
}

/// One query parameter as the document shows it: the same bounds the parser checks.
fn query_parameter(param: &Param) -> Parameter {
    let schema: Schema = match param {
        Param::Int(p) => ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(p.min))
            .maximum(Some(p.max))
            .default(Some(p.default.into()))
            .into(),
        Param::Time(_) => OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                    .description(Some("RFC 3339, 1970 to 9999")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(0))
                    .maximum(Some(LATEST_MS))
                    .description(Some("epoch milliseconds")),
            )
            .into(),
        Param::Country(_) => ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[A-Za-z]{2}$"))
            .into(),
        Param::IpType(_) => ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["v4", "v6", "unknown"]))
            .into(),
    };
    ParameterBuilder::new()
        .name(param.name())
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(param.description()))
        .schema(Some(schema))
        .build()
}

/// An error response: `{"code", "error"}` where `code` is one of the codes of `status`.
fn error_response(status: StatusCode, description: &str) -> Response {
    let codes: Vec<&str> = ErrorCode::ALL
        .iter()
        .filter(|c| c.status() == status)
        .map(|c| c.as_str())
        .collect();
    let schema = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes.clone()))
                .description(Some("Machine-readable code.")),
        )
        .required("code")
        .property(
            "error",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("Human sentence.")),
        )
        .required("error")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    ResponseBuilder::new()
        .description(format!("{description} (code: {})", codes.join(", ")))
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(schema)).build(),
        )
        .build()
}

/// 400: a bad parameter, an unsupported filter, an unknown or repeated parameter.
pub struct BadRequest;

impl<'r> ToResponse<'r> for BadRequest {
    fn response() -> (&'r str, utoipa::openapi::RefOr<Response>) {
        let r = error_response(
            StatusCode::BAD_REQUEST,
            "Bad parameters, an unsupported filter, or an unknown or repeated parameter",
        );
        ("BadRequest", r.into())
    }
}

/// 500: a partition could not read its stored counts.
pub struct ServerError;

impl<'r> ToResponse<'r> for ServerError {
    fn response() -> (&'r str, utoipa::openapi::RefOr<Response>) {
        let r = error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "A partition could not read its stored counts",
        );
        ("ServerError", r.into())
    }
}

/// 503: a partition is recovering, restarting or slow; the service is at its
/// request limit; or no metrics recorder.
pub struct Unavailable;

impl<'r> ToResponse<'r> for Unavailable {
    fn response() -> (&'r str, utoipa::openapi::RefOr<Response>) {
        let r = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "Cannot answer now: a partition is recovering or did not answer in time, or the \
             service answers its most requests at once; retry shortly",
        );
        ("Unavailable", r.into())
    }
}

/// 401: no bearer token, or not `Authorization: Bearer <token>`.
pub struct Unauthorized;

impl<'r> ToResponse<'r> for Unauthorized {
    fn response() -> (&'r str, utoipa::openapi::RefOr<Response>) {
        let r = error_response(
            StatusCode::UNAUTHORIZED,
            "A token is needed: send `Authorization: Bearer <token>` (the answer carries \
             `WWW-Authenticate: Bearer`)",
        );
        ("Unauthorized", r.into())
    }
}

/// 403: a bearer token the service does not accept.
pub struct Forbidden;

impl<'r> ToResponse<'r> for Forbidden {
    fn response() -> (&'r str, utoipa::openapi::RefOr<Response>) {
        let r = error_response(
            StatusCode::FORBIDDEN,
            "The token is not one this service accepts",
        );
        ("Forbidden", r.into())
    }
}

/// 414: a query string over `http_max_query_bytes`.
pub struct QueryTooLong;

impl<'r> ToResponse<'r> for QueryTooLong {
    fn response() -> (&'r str, utoipa::openapi::RefOr<Response>) {
        let r = error_response(
            StatusCode::URI_TOO_LONG,
            "The query string is longer than the service accepts (http_max_query_bytes)",
        );
        ("QueryTooLong", r.into())
    }
}

#[cfg(test)]
mod tests {
    //! The document must not drift from the code: every route is documented
    //! with exactly the methods it answers, and every documented query
    //! parameter is accepted by the handler within exactly its documented
    //! bounds (and nothing undocumented is).
    use super::super::{router, routes, Gateway};
    use super::*;
    use adclick_actors::partitions::Partitions;
    use adclick_actors::DimensionSet;
    use axum::body::Body;
    use axum::http::{Method, Request};
    use serde_json::Value;
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::time::Duration;
    use tower::ServiceExt;

    /// A gateway whose partitions have not recovered: every request that
    /// passes validation is a 503 `not_ready`, so a 400 always means the
    /// parser refused something.
    fn test_router() -> axum::Router {
        router_with(PipelineSettings::with_defaults(2))
    }

    fn router_with(settings: PipelineSettings) -> axum::Router {
        router_with_access(settings, ApiAccess::open())
    }

    fn router_with_access(settings: PipelineSettings, access: ApiAccess) -> axum::Router {
        let settings = Arc::new(settings);
        let mut gateway = Gateway::new(
            Arc::new(Partitions::new(
                settings.clone(),
                Duration::from_millis(100),
            )),
            settings,
            None,
        );
        gateway.access = access;
        router(Arc::new(gateway)).unwrap()
    }

    /// Settings with two extra dimensions declared, each countable alone
    /// (so each documented parameter alone is a valid query).
    fn with_extra_dimensions() -> PipelineSettings {
        let mut settings = PipelineSettings::with_defaults(2);
        settings.extra_dimensions = ["device", "placement"]
            .iter()
            .map(|name| ExtraDimension {
                name: name.to_string(),
                cap: 10,
            })
            .collect();
        let extras = settings.extra_dimensions.clone();
        for names in [&["device"][..], &["placement"], &["country", "device"]] {
            settings
                .dimension_sets
                .push(DimensionSet::from_names(names, &extras).unwrap());
        }
        settings
    }

    fn doc() -> Value {
        serde_json::from_str(
            &document(&PipelineSettings::with_defaults(2), &ApiAccess::open()).unwrap(),
        )
        .unwrap()
    }

    /// The document a router serves.
    async fn served_doc(router: &axum::Router) -> Value {
        let (status, doc) = call(router, Method::GET, "/openapi.json").await;
        assert_eq!(status, 200);
        doc
    }

    async fn call(router: &axum::Router, method: Method, uri: &str) -> (u16, Value) {
        call_with_token(router, method, uri, None).await
    }

    async fn call_with_token(
        router: &axum::Router,
        method: Method,
        uri: &str,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        // An event stream never ends: its status is the answer.
        let streams = response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
        if streams {
            return (status, Value::Null);
        }
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// A concrete path for a documented template.
    fn concrete(path: &str) -> String {
        path.replace("{ad_id}", "ad-1")
    }

    #[test]
    fn the_document_is_openapi_3_1_and_lists_every_route() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let documented: BTreeSet<String> =
            doc["paths"].as_object().unwrap().keys().cloned().collect();
        let routed: BTreeSet<String> = routes().iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(documented, routed, "routes and documented paths differ");
    }

    #[tokio::test]
    async fn every_route_answers_exactly_its_documented_methods() {
        let router = test_router();
        let doc = doc();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::PATCH,
                Method::OPTIONS,
                Method::TRACE,
            ] {
                let documented = item.get(method.as_str().to_lowercase()).is_some();
                let (status, body) = call(&router, method.clone(), &concrete(path)).await;
                if documented {
                    let responses = &item[method.as_str().to_lowercase()]["responses"];
                    assert!(
                        responses.get(status.to_string()).is_some(),
                        "{method} {path} answered {status}, which is not documented: {body}"
                    );
                } else {
                    assert_eq!(
                        (status, body["code"].as_str()),
                        (405, Some("method_not_allowed")),
                        "{method} {path} is not documented, so it must be a 405"
                    );
                }
            }
        }
    }

    /// The documented query parameters of an operation, by name.
    fn query_params(doc: &Value, path: &str) -> Vec<(String, Value)> {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| (p["name"].as_str().unwrap().to_string(), p["schema"].clone()))
            .collect()
    }

    /// A value the document says is valid, for each kind of schema it uses.
    fn valid_value(schema: &Value) -> String {
        if let Some(default) = schema.get("default") {
            return default.to_string();
        }
        if let Some(values) = schema["enum"].as_array() {
            return values[0].as_str().unwrap().to_string();
        }
        if schema.get("oneOf").is_some() {
            return "2026-11-29T10:00:00Z".into();
        }
        if schema["pattern"] == "^[A-Za-z]{2}$" {
            return "us".into();
        }
        if schema["type"] == "string" && schema.get("maxLength").is_some() {
            return "ios".into();
        }
        panic!("no sample for the schema {schema}");
    }

    #[tokio::test]
    async fn documented_query_parameters_are_exactly_what_the_handlers_accept() {
        for settings in [PipelineSettings::with_defaults(2), with_extra_dimensions()] {
            let router = router_with(settings);
            let doc = served_doc(&router).await;
            check_query_parameters(&router, &doc).await;
        }
    }

    async fn check_query_parameters(router: &axum::Router, doc: &Value) {
        let router = router.clone();
        for path in FILTERED_PATHS {
            let params = query_params(doc, path);
            let base = concrete(path);
            // Nothing at all, and every parameter alone (time ranges as the
            // pair they must be), pass validation: 503 not_ready here.
            let mut queries = vec![String::new()];
            for (name, schema) in &params {
                queries.push(match name.as_str() {
                    "from" | "to" => "from=2026-11-29T10:00:00Z&to=1795946460000".into(),
                    _ => format!("{name}={}", valid_value(schema)),
                });
            }
            for query in &queries {
                let (status, body) = call(&router, Method::GET, &format!("{base}?{query}")).await;
                assert_eq!(
                    (status, body["code"].as_str()),
                    (503, Some("not_ready")),
                    "{path}?{query} is valid by the document"
                );
            }
            // Integers: accepted exactly within the documented bounds.
            for (name, schema) in &params {
                let (Some(min), Some(max)) =
                    (schema["minimum"].as_i64(), schema["maximum"].as_i64())
                else {
                    continue;
                };
                if schema["type"] != "integer" {
                    continue;
                }
                for (value, ok) in [(min, true), (max, true), (min - 1, false), (max + 1, false)] {
                    let uri = format!("{base}?{name}={value}");
                    let (status, body) = call(&router, Method::GET, &uri).await;
                    let want = if ok {
                        (503, "not_ready")
                    } else {
                        (400, "invalid_parameter")
                    };
                    assert_eq!(
                        (status, body["code"].as_str()),
                        (want.0, Some(want.1)),
                        "{uri}"
                    );
                }
            }
            // Text lengths: accepted exactly within the documented bounds.
            for (name, schema) in &params {
                let (Some(min), Some(max)) =
                    (schema["minLength"].as_u64(), schema["maxLength"].as_u64())
                else {
                    continue;
                };
                for (len, ok) in [(min, true), (max, true), (min - 1, false), (max + 1, false)] {
                    let uri = format!("{base}?{name}={}", "x".repeat(len as usize));
                    let (status, body) = call(&router, Method::GET, &uri).await;
                    let want = if ok {
                        (503, "not_ready")
                    } else {
                        (400, "invalid_filter_value")
                    };
                    assert_eq!(
                        (status, body["code"].as_str()),
                        (want.0, Some(want.1)),
                        "{uri}"
                    );
                }
            }
            // Anything undocumented is refused, never ignored.
            let (status, body) = call(&router, Method::GET, &format!("{base}?contry=US")).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (400, Some("unknown_parameter")),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn extra_dimensions_are_documented_from_the_settings() {
        let settings = with_extra_dimensions();
        let doc = served_doc(&router_with(settings.clone())).await;
        let names = |doc: &Value, path: &str| -> Vec<String> {
            query_params(doc, path)
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        for path in FILTERED_PATHS {
            let plain = names(&self::doc(), path);
            let mut want = plain.clone();
            want.extend(["device".to_string(), "placement".to_string()]);
            assert_eq!(names(&doc, path), want, "{path}");
            assert!(!plain.contains(&"device".to_string()), "{path}");
        }
        // Answers echo the extra values in `filter`: the schema names them,
        // and still refuses anything else.
        let schema = &doc["components"]["schemas"]["FilterBody"];
        assert_eq!(schema["additionalProperties"], false);
        let plain = &self::doc()["components"]["schemas"]["FilterBody"];
        assert!(plain["properties"].get("device").is_none());
        let filter = adclick_actors::FilterQuery {
            country: adclick_actors::Country::parse("us"),
            ip_type: Some(adclick_actors::IpType::V4),
            extras: vec![
                ("placement".into(), "top".into()),
                ("device".into(), "ios".into()),
            ],
        };
        let body = serde_json::to_value(super::super::body::FilterBody::from(&filter)).unwrap();
        for (name, value) in body.as_object().unwrap() {
            let property = &schema["properties"][name];
            assert!(
                property.is_object(),
                "`{name}` is not documented in FilterBody"
            );
            if property["type"] == "string" && property.get("maxLength").is_some() {
                let len = value.as_str().unwrap().chars().count() as u64;
                assert!(len >= property["minLength"].as_u64().unwrap());
                assert!(len <= property["maxLength"].as_u64().unwrap());
            }
        }
    }

    #[tokio::test]
    async fn the_ad_id_pattern_is_what_the_handler_accepts() {
        let router = test_router();
        let doc = doc();
        let pattern = doc["paths"]["/v1/ads/{ad_id}/aggregated_count"]["get"]["parameters"][0]
            ["schema"]["pattern"]
            .clone();
        assert_eq!(pattern, AD_ID_PATTERN);
        let longest = "a".repeat(64);
        let too_long = "a".repeat(65);
        for (ad, ok) in [
            ("ad-1", true),
            ("A_z-09", true),
            (longest.as_str(), true),
            (too_long.as_str(), false),
            ("ad.1", false),
            ("ad%20one", false),
            ("%C3%A9", false),
            // Not UTF-8 once decoded: still a JSON 400, not axum's text/plain rejection.
            ("%FF", false),
        ] {
            let (status, body) = call(
                &router,
                Method::GET,
                &format!("/v1/ads/{ad}/aggregated_count"),
            )
            .await;
            let want = if ok {
                (503, "not_ready")
            } else {
                (400, "invalid_ad_id")
            };
            assert_eq!(
                (status, body["code"].as_str()),
                (want.0, Some(want.1)),
                "{ad}"
            );
        }
    }

    /// With tokens configured, exactly the operations the document marks
    /// with the bearer requirement refuse a request without a token (401) or
    /// with an unknown one (403), and answer a known one; every answer is
    /// documented. Without tokens nothing is marked.
    #[tokio::test]
    async fn the_security_requirements_are_what_the_gateway_enforces() {
        let open = doc();
        for (path, item) in open["paths"].as_object().unwrap() {
            assert!(item["get"].get("security").is_none(), "{path}");
            assert!(item["get"]["responses"].get("401").is_none(), "{path}");
        }
        assert_eq!(
            open["components"]["securitySchemes"][SECURITY_SCHEME]["scheme"],
            "bearer"
        );
        for metrics_require_token in [false, true] {
            let access = ApiAccess::with_tokens(
                vec![super::super::access::TokenDigest::of(b"right")],
                metrics_require_token,
            );
            let router = router_with_access(PipelineSettings::with_defaults(2), access.clone());
            let doc = served_doc(&router).await;
            let mut protected = 0;
            for (path, item) in doc["paths"].as_object().unwrap() {
                let operation = &item["get"];
                let documented =
                    |status: u16| operation["responses"].get(status.to_string()).is_some();
                let marked = operation.get("security").is_some();
                assert_eq!(marked, access.protects(path), "{path}");
                let uri = concrete(path);
                let (status, body) = call(&router, Method::GET, &uri).await;
                if marked {
                    protected += 1;
                    assert_eq!(
                        (status, body["code"].as_str()),
                        (401, Some("unauthorized")),
                        "{path}"
                    );
                    let (status, body) =
                        call_with_token(&router, Method::GET, &uri, Some("wrong")).await;
                    assert_eq!(
                        (status, body["code"].as_str()),
                        (403, Some("forbidden")),
                        "{path}"
                    );
                    assert!(documented(401) && documented(403), "{path}");
                }
                let (status, body) =
                    call_with_token(&router, Method::GET, &uri, Some("right")).await;
                assert!(![401, 403].contains(&status), "{path}: {body}");
                assert!(documented(status), "{path} answered {status}: {body}");
                let long = format!("{uri}?x={}", "a".repeat(5000));
                let (status, body) =
                    call_with_token(&router, Method::GET, &long, Some("right")).await;
                assert_eq!(
                    (status, body["code"].as_str()),
                    (414, Some("query_too_long")),
                    "{path}"
                );
                assert!(documented(414), "{path}");
            }
            // The counts always need the token; /metrics as configured.
            for path in FILTERED_PATHS {
                assert!(
                    doc["paths"][path]["get"].get("security").is_some(),
                    "{path}"
                );
            }
            let metrics = doc["paths"]["/metrics"]["get"].get("security").is_some();
            assert_eq!(metrics, metrics_require_token);
            assert!(protected >= FILTERED_PATHS.len());
        }
    }

    #[test]
    fn each_error_status_documents_exactly_its_codes() {
        let doc = doc();
        for (name, status) in [
            ("BadRequest", StatusCode::BAD_REQUEST),
            ("ServerError", StatusCode::INTERNAL_SERVER_ERROR),
            ("Unavailable", StatusCode::SERVICE_UNAVAILABLE),
            ("Unauthorized", StatusCode::UNAUTHORIZED),
            ("Forbidden", StatusCode::FORBIDDEN),
            ("QueryTooLong", StatusCode::URI_TOO_LONG),
        ] {
            let codes = &doc["components"]["responses"][name]["content"]["application/json"]
                ["schema"]["properties"]["code"]["enum"];
            let want: Vec<&str> = ErrorCode::ALL
                .iter()
                .filter(|c| c.status() == status)
                .map(|c| c.as_str())
                .collect();
            assert_eq!(codes, &serde_json::json!(want), "{name}");
        }
    }
}
