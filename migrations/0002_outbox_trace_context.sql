-- Trace context of the work that decided each outbox message, so that what
-- the relay publishes continues the trace (W3C traceparent/tracestate).
ALTER TABLE outbox ADD COLUMN traceparent text, ADD COLUMN tracestate text;
