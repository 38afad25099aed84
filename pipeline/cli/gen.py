"""``ctpipe gen``: synthetic sensor events, to JSONL files or a Kafka topic."""
from __future__ import annotations

import datetime as dt

from core.errors import ConfigError
from pipeline.cli.common import add_command, emit, parse_time, progress


def register(subparsers) -> None:
    p = add_command(subparsers, "gen", "write synthetic sensor events (JSONL files or a Kafka topic)", run,
                    description="Write synthetic sensor events with a learnable label, a few malformed lines and "
                                "out-of-range values: to --out DIR as events-NNNN.jsonl files, or to a topic of "
                                "source.kafka with --to-kafka TOPIC.",
                    uses_storage=False)
    p.add_argument("--out", help="output directory for events-NNNN.jsonl files")
    p.add_argument("--to-kafka", metavar="TOPIC", help="produce to this topic of source.kafka instead of files")
    p.add_argument("--rate", type=float, default=None, help="messages per second (default: as fast as possible)")
    p.add_argument("--hours", type=int, default=6, help="event-time hours to generate (default 6)")
    p.add_argument("--rows-per-hour", type=int, default=2000, help="valid events per hour (default 2000)")
    p.add_argument("--start", default="2026-11-27T00:00Z", help="event time of the first hour (ISO-8601)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7): the same seed, the same events")
    p.add_argument("--malformed-per-hour", type=int, default=2, help="malformed lines per hour (default 2)")
    p.add_argument("--out-of-range-per-hour", type=int, default=1, help="humidity > 100 per hour (default 1)")
    p.add_argument("--drift-from-hour", type=int, default=None,
                   help="shift the temperature mean from this hour on (to demo drift detection)")


def run(args, ctx) -> int:
    from pipeline import synthetic

    if not args.to_kafka and not args.out:
        raise ConfigError("gen: pass --out DIR (files) or --to-kafka TOPIC")
    start = dt.datetime.fromtimestamp(parse_time(args.start, "--start") / 1000, tz=dt.timezone.utc)
    per_hour = args.rows_per_hour + args.malformed_per_hour + args.out_of_range_per_hour
    lines = synthetic.generate(start, args.hours, args.rows_per_hour, seed=args.seed,
                               malformed_per_hour=args.malformed_per_hour,
                               out_of_range_per_hour=args.out_of_range_per_hour,
                               mean_shift_from_hour=args.drift_from_hour)
    lines = progress(lines, total=args.hours * per_hour, unit="events")
    if args.to_kafka:
        from transforms.kafka.produce import produce_generated

        produced = produce_generated(ctx.config, args.to_kafka, lines, args.rate)
        emit(args, produced, [f"produced {produced['valid']} events and {produced['malformed']} malformed "
                              f"messages to topic {args.to_kafka}"])
        return 0
    stats = synthetic.write_jsonl(args.out, lines, rows_per_hour=per_hour)
    emit(args, {"out": args.out, "valid": stats.valid, "malformed": stats.malformed,
                "out_of_range": stats.out_of_range},
         [f"wrote {stats.valid} events ({stats.out_of_range} out of range) and {stats.malformed} malformed "
          f"lines to {args.out}"])
    return 0
