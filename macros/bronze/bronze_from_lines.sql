{#- Bronze rows from raw lines, in Spark SQL: what Databricks' bronze models select from read_files
    or read_kafka (databricks_bronze.sql), and what pinpipe's Spark ingestion runs on each micro-batch
    (ingestion/spark_ingest.py). `lines` is a query giving each record as `raw_record` (its JSON text;
    null when it could not be read, with `raw_data` as it came) and the loaders' lineage: `_stream`,
    `_offset`, `_source`, `_batch_id`, `line_number` (and Kinesis' own on stream tables). -#}

{#- The records the loaders' rule can key, as bronze rows of `table`. -#}
{% macro bronze_rows(table, lines) -%}
with parsed as (
    {{ parsed_lines(lines) }}
)

select
    {{- payload_as_text(table) }},
    _stream,
    _offset,
    _source,
    _batch_id,
    current_timestamp() as _ingested_at
    {%- if table.endswith('_stream') %},
    _shard_id,
    _sequence_number,
    _arrival_time
    {%- endif %}
from parsed
where {{ unidentified_reason(table) }} is null
{%- endmacro %}

{#- The records the rule cannot key, as quarantine rows with the reason. -#}
{% macro quarantine_rows(table, lines) -%}
select
    '{{ bronze_carries(table) }}' as table_name,
    reason,
    raw_data as raw_record,
    line_number,
    _stream,
    _offset,
    _source,
    _batch_id,
    current_timestamp() as _ingested_at
from (
    select
        parsed.*,
        {{ unidentified_reason(table) }} as reason
    from ({{ parsed_lines(lines) }}) as parsed
)
where reason is not null
{%- endmacro %}

{#- The lines with each record parsed (`record`, VARIANT; null when not JSON), what the key rule and
    the payload read (identify_records.sql). -#}
{% macro parsed_lines(lines) -%}
    select
        lines.*,
        try_parse_json(raw_record) as record
    from ({{ lines }}) as lines
{%- endmacro %}

{#- The sink's JSON-lines objects of `topic`, <raw objects>/topics/<topic>/partition=<p>/
    <topic>+<p>+<first offset>.json, from `objects` (a query giving each object's text as `value` and
    its path as `file_path`): one line per offset (an empty one for an offset without a record, a
    Kafka commit marker), so a record's offset is the object's first plus its line. -#}
{% macro object_lines(objects, topic) -%}
    select
        concat('kafka/{{ topic }}/', objects.partition_number) as _stream,
        objects.first_offset + lines.position as _offset,
        objects.file_path as _source,
        concat('kafka/{{ topic }}/', objects.partition_number, '@', cast(objects.first_offset as string)) as _batch_id,
        cast(lines.position + 1 as bigint) as line_number,
        lines.text as raw_data,
        lines.text as raw_record
    from (
        select
            value,
            file_path,
            regexp_extract(file_path, 'partition=([0-9]+)/', 1) as partition_number,
            cast(regexp_extract(file_path, '[+]([0-9]+)[.]json$', 1) as bigint) as first_offset
        from ({{ objects }}) as found
        where regexp_extract(file_path, 'topics/([^/]+)/partition=[0-9]+/[^/]+$', 1) = '{{ topic }}'
    ) as objects
    lateral view posexplode(split(objects.value, '\n')) lines as position, text
    where lines.text != ''
{%- endmacro %}

{#- Kafka's records of `topic` as they are in the topic, from `records` (a query with Kafka's
    columns: topic, partition, offset, value): each partition a stream, each offset a record. -#}
{% macro kafka_lines(records, topic) -%}
    select
        concat('kafka/', records.topic, '/', cast(records.partition as string)) as _stream,
        records.offset as _offset,
        concat('kafka://', records.topic, '/', cast(records.partition as string)) as _source,
        concat('kafka/', records.topic, '/', cast(records.partition as string), '@', cast(records.offset as string)) as _batch_id,
        cast(null as bigint) as line_number,
        cast(records.value as string) as raw_data,
        cast(records.value as string) as raw_record
    from ({{ records }}) as records
    where records.topic = '{{ topic }}'
{%- endmacro %}
