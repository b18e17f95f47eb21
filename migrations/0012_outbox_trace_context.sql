-- The W3C trace context (`traceparent`, `tracestate`) of the span that enqueued a
-- message, when spans are exported over OTLP: the relay sends it as SQS message
-- attributes, so the worker's spans join the request's trace. NULL when export is off.
-- A nullable column without a default: adding it rewrites nothing and locks briefly.
ALTER TABLE outbox ADD COLUMN trace_context jsonb;
