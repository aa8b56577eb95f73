#!/usr/bin/env python3
"""Ask Landlord for a tenant over NATS and follow its saga to the end.

What another service does to get a tenant (docs/contract.md):

1. publish a ``TenantRequested`` on ``<root>.v1.events.<key>.requested``
   with the CloudEvents headers (``ce-type: landlord.v1.TenantRequested``,
   ``ce-subject: <key>``, ``Nats-Msg-Id`` equal to ``ce-id``);
2. read ``<root>.v1.events.<key>.*`` from the start of the stream: the
   ``TenantAccepted`` (or ``TenantRejected``) carrying this request's
   idempotency id names the saga; then every event whose
   ``ce-correlationid`` is that saga id, until ``activated``,
   ``provisioning_failed`` or ``cancelled``.

Reading from the start rather than from "now" is what makes a repeated
request work: the orchestrator answers a request it has seen before with
nothing, so its outcome is only in the stream's history.

The protobuf modules come from proto/ through grpcio-tools, e.g.

    python -m grpc_tools.protoc -I proto --python_out=/tmp/landlord_pb \\
        proto/landlord/v1/*.proto
    PYTHONPATH=/tmp/landlord_pb python examples/python/request_tenant.py acme

Exit status: 0 when the tenant is ACTIVE, 1 when it is FAILED, CANCELLED
or the request was rejected, 2 on a timeout or a usage error.
"""

import argparse
import asyncio
import datetime
import os
import sys
import uuid

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy
from google.protobuf import descriptor_pool, message_factory

# Generated from proto/landlord/v1/*.proto; importing them registers every
# message in the default descriptor pool, where a ce-type is looked up.
from landlord.v1 import events_pb2, tenant_pb2  # noqa: F401

# Events after which nothing more happens in a saga, and what each means.
OUTCOMES = {
    "activated": "ACTIVE",
    "provisioning_failed": "FAILED",
    "cancelled": "CANCELLED",
}


def decode(headers, payload):
    """The message a ce-type names: ``landlord.v1.<MessageName>`` is the
    protobuf full name of the payload's message."""
    descriptor = descriptor_pool.Default().FindMessageTypeByName(headers["ce-type"])
    return message_factory.GetMessageClass(descriptor).FromString(payload)


def request_headers(key):
    """The CloudEvents NATS binding (binary mode) as Landlord reads it."""
    message_id = str(uuid.uuid4())
    return {
        "ce-specversion": "1.0",
        "ce-id": message_id,
        # The broker drops a re-publish of the same id within the stream's
        # duplicate window.
        "Nats-Msg-Id": message_id,
        "ce-type": "landlord.v1.TenantRequested",
        "ce-source": "example/python",
        "ce-time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "ce-subject": key,
        "ce-datacontenttype": "application/protobuf",
    }


async def run(args):
    nc = await nats.connect(args.nats_url)
    try:
        js = nc.jetstream()
        root = args.namespace
        # Subscribe before publishing, from the first message on the
        # subject: nothing about this key can be missed.
        feed = await js.subscribe(
            f"{root}.v1.events.{args.key}.*",
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        request = events_pb2.TenantRequested(
            idempotency_id=args.idempotency_id,
            key=args.key,
            display_name=args.display_name,
            plan=args.plan,
            admin=tenant_pb2.AdminContact(
                email=args.admin_email, first_name="Ada", last_name="Lovelace"
            ),
            source="example-python",
        )
        ack = await js.publish(
            f"{root}.v1.events.{args.key}.requested",
            request.SerializeToString(),
            headers=request_headers(args.key),
        )
        print(f"published TenantRequested (stream {ack.stream}, sequence {ack.seq}, "
              f"idempotency id {args.idempotency_id})", flush=True)

        saga_id = None
        deadline = asyncio.get_running_loop().time() + args.timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                print(f"no outcome within {args.timeout}s", file=sys.stderr)
                return 2
            try:
                msg = await feed.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                continue
            headers = msg.headers or {}
            event = msg.subject.rsplit(".", 1)[-1]
            body = decode(headers, msg.data)
            correlation = headers.get("ce-correlationid")
            mine = False
            if event in ("accepted", "rejected") and body.idempotency_id == args.idempotency_id:
                # Accepted and rejected both name the saga the request
                # started (or would have started) as their correlation id.
                saga_id = correlation
                mine = True
            elif saga_id is not None and correlation == saga_id:
                mine = True
            if not mine:
                continue
            print(f"{event:22} {headers.get('ce-type')}  {describe(event, body)}", flush=True)
            if event == "rejected":
                print(f"outcome: REJECTED ({body.rule})")
                return 1
            if event in OUTCOMES:
                outcome = OUTCOMES[event]
                print(f"outcome: {outcome} (saga {saga_id})")
                return 0 if outcome == "ACTIVE" else 1
    finally:
        await nc.close()


def describe(event, body):
    """One line about an event: its step, progress or reason."""
    if event == "accepted":
        return f"tenant {body.tenant_id}, saga {body.saga_id}"
    if event == "rejected":
        return f"{body.rule}: {body.reason}"
    parts = []
    for field in ("step", "failed_step", "attempt", "reason"):
        if body.DESCRIPTOR.fields_by_name.get(field) and getattr(body, field):
            parts.append(f"{field}={getattr(body, field)}")
    if body.DESCRIPTOR.fields_by_name.get("progress") and body.HasField("progress"):
        parts.append(f"{body.progress.percent}%")
    return " ".join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("key", help="tenant key, e.g. acme")
    parser.add_argument("--plan", default="standard")
    parser.add_argument("--display-name", default=None)
    parser.add_argument("--admin-email", default=None)
    parser.add_argument(
        "--idempotency-id",
        default=str(uuid.uuid4()),
        help="the same id never makes a second tenant; give the id of an earlier "
        "request to learn its outcome",
    )
    parser.add_argument("--nats-url", default=os.environ.get("LANDLORD_NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument(
        "--namespace", default=os.environ.get("LANDLORD_NAMESPACE", "landlord"), help="subject root"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the outcome")
    args = parser.parse_args()
    args.display_name = args.display_name or args.key
    args.admin_email = args.admin_email or f"admin@{args.key}.example"
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
