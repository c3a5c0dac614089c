//! Arrow Flight SQL (port 4319 by default): the same read-only `spans`
//! table, limits and errors as `POST /api/v1/sql`, for JDBC/ADBC/ODBC
//! clients and BI tools.
//!
//! Statements and prepared statements are stateless: the handle and the
//! ticket carry the SQL text itself, so any instance can answer a ticket and
//! nothing needs closing. Metadata calls (catalogs, schemas, tables, table
//! types, SqlInfo) describe the one table.

use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arrow::datatypes::Schema;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use futures::{Stream, TryStreamExt as _};
use prost::Message as _;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::{QueryEngine, QueryError, SPANS};
use crate::executor::{Class, Scope};

const CATALOG: &str = "tracelake";
const DB_SCHEMA: &str = "public";

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// The Flight SQL service as a router for the binary to serve.
pub fn router(engine: Arc<QueryEngine>) -> axum::Router {
    let service = FlightServiceServer::new(FlightSql { engine })
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(64 << 20);
    tonic::service::Routes::new(service).into_axum_router()
}

pub struct FlightSql {
    engine: Arc<QueryEngine>,
}

/// An internal failure as a gRPC status: logged with an id, which is all
/// the client learns.
fn internal(e: impl std::fmt::Display) -> Status {
    crate::error::ApiError::internal(&e).into()
}

/// A query error as a gRPC status: the code every API maps it to
/// (`crate::error`), internal details logged, not sent.
fn status(e: QueryError) -> Status {
    crate::error::ApiError::from(e).into()
}

fn sql_text(bytes: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(bytes).map_err(|_| Status::invalid_argument("SQL must be UTF-8"))
}

static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "tracelake");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, 0_i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.build().expect("static SqlInfo is valid")
});

impl FlightSql {
    /// Plans `sql` (read-only) and returns its result schema.
    async fn schema_of(&self, sql: &str) -> Result<Schema, Status> {
        let engine = Arc::clone(&self.engine);
        let sql = sql.to_string();
        let plan = async move {
            let df = engine.plan_sql(&sql).await?;
            Ok(df.schema().as_arrow().clone())
        };
        self.engine
            .executor()
            .run(Class::Interactive, plan)
            .await
            .and_then(|r| r)
            .map_err(status)
    }

    fn info(
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(internal)?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(descriptor)
            .with_ordered(true);
        Ok(Response::new(info))
    }

    /// Runs `sql` on the query executor under the query limits, encodes
    /// the result there too, and streams it. An answer that lacks what a
    /// source could not give (an ingest node that did not answer) says so
    /// in `warning` response headers, as the HTTP API does.
    async fn run(&self, sql: &str) -> Result<Response<DoGetStream>, Status> {
        let engine = Arc::clone(&self.engine);
        let sql = sql.to_string();
        let work = async move {
            let (schema, batches) = engine.sql(&sql).await?;
            let data = FlightDataEncoderBuilder::new()
                .with_schema(schema)
                .build(futures::stream::iter(batches.into_iter().map(Ok)))
                .try_collect::<Vec<FlightData>>()
                .await
                .map_err(|e| QueryError::Internal(format!("cannot encode the result: {e}")))?;
            Ok((data, Scope::current_or(Duration::ZERO).warnings()))
        };
        let (data, warnings) = self
            .engine
            .executor()
            .run(Class::Heavy, work)
            .await
            .and_then(|r| r)
            .map_err(status)?;
        let mut response: Response<DoGetStream> =
            Response::new(Box::pin(futures::stream::iter(data.into_iter().map(Ok))));
        for warning in warnings {
            if let Ok(value) = crate::executor::warning_value(&warning).parse() {
                response.metadata_mut().append("warning", value);
            }
        }
        Ok(response)
    }

    fn one_batch(
        batch: Result<arrow::array::RecordBatch, arrow_flight::error::FlightError>,
    ) -> Result<Response<DoGetStream>, Status> {
        let batch = batch.map_err(internal)?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(batch.schema())
            .build(futures::stream::once(async { Ok(batch) }))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    /// Accepts every handshake. Credentials are checked before a call gets
    /// here, by the binary's auth layer, which also answers a Basic
    /// handshake with the `authorization: Bearer` header the client then
    /// sends on every call; without auth there is nothing to check.
    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        Ok(Response::new(Box::pin(futures::stream::once(async {
            Ok(response)
        }))))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.schema_of(&query.query).await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        Self::info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.run(sql_text(&ticket.statement_handle)?).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let schema = self.schema_of(&query.query).await?;
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: arrow::error::ArrowError| internal(e))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema,
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Ok(())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self
            .schema_of(sql_text(&query.prepared_statement_handle)?)
            .await?;
        Self::info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.run(sql_text(&query.prepared_statement_handle)?).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        Self::info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append(CATALOG);
        Self::one_batch(b.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Self::info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append(CATALOG, DB_SCHEMA);
        Self::one_batch(b.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Self::info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut b = query.into_builder();
        let spans = self.engine.spans();
        spans.ensure_layout().await.map_err(internal)?;
        b.append(CATALOG, DB_SCHEMA, SPANS, "TABLE", spans.layout().schema())
            .map_err(internal)?;
        Self::one_batch(b.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        Self::info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append("TABLE");
        Self::one_batch(b.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&SQL_INFO).schema();
        Self::info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Self::one_batch(query.into_builder(&SQL_INFO).build())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
