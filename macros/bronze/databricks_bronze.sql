{#- Bronze written by Databricks itself, on the databricks target (docs/databricks-bronze.md): the
    batch tables from the sink's raw objects (`read_files`, Auto Loader) or straight from Kafka
    (`read_kafka`), the stream tables from Kinesis (`read_kinesis`), each a streaming table with the
    columns, lineage and quarantine rule of the tables pinpipe's loaders write. Chosen by two vars:
      databricks_bronze_batch:   none (default: pinpipe's loaders write bronze) | objects | kafka
      databricks_bronze_streams: none (default) | kinesis -#}

{% macro databricks_writes_bronze(table) -%}
    {%- set kind = 'stream' if table.endswith('_stream') else ('quarantine' if table == 'quarantine' else 'batch') -%}
    {%- set batch = var('databricks_bronze_batch', 'none') != 'none' -%}
    {%- set streams = var('databricks_bronze_streams', 'none') != 'none' -%}
    {%- set chosen = {'batch': batch, 'stream': streams, 'quarantine': batch or streams}[kind] -%}
    {{ return(target.type == 'databricks' and chosen) }}
{%- endmacro %}

{#- A model reading a bronze table through its source depends on the model that writes the table
    when Databricks writes it, so dbt builds bronze first; elsewhere, nothing. -#}
{% macro databricks_bronze_dependency(table) -%}
    {%- if databricks_writes_bronze(table) -%}
    -- bronze.{{ table }} is written by {{ ref('databricks_bronze__' ~ table) }}
    {%- endif -%}
{%- endmacro %}

{#- One bronze table as a streaming table: the records its source gives, identified, with their
    lineage; what cannot be identified goes to the quarantine model instead. -#}
{% macro databricks_bronze_table(table) -%}
with parsed as (
    {{ databricks_parsed_lines(table) }}
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

{#- Every record no bronze table could key, from each source Databricks reads. -#}
{% macro databricks_quarantine() -%}
    {%- set tables = [] -%}
    {%- for table in bronze_tables() if table != 'quarantine' and databricks_writes_bronze(table) -%}
        {%- do tables.append(table) -%}
    {%- endfor -%}
    {%- for table in tables %}
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
    from ({{ databricks_parsed_lines(table) }}) as parsed
)
where reason is not null
    {%- if not loop.last %}
union all
    {%- endif %}
    {%- endfor %}
{%- endmacro %}

{#- A source's lines with each record parsed (`record`, VARIANT; null when not JSON), what the key
    rule and the payload read (identify_records.sql). -#}
{% macro databricks_parsed_lines(table) -%}
    select
        lines.*,
        try_parse_json(raw_record) as record
    from ({{ databricks_raw_lines(table) }}) as lines
{%- endmacro %}

{#- The raw table a bronze table carries (pin_stream carries pin). -#}
{% macro bronze_carries(table) -%}
    {{ return(table | replace('_stream', '')) }}
{%- endmacro %}

{#- A source's records as one JSON text each (`raw_record`; null when it cannot be read, with
    `raw_data` as it came), with the lineage pinpipe's loaders write: `_stream`, `_offset`,
    `_source`, `_batch_id`, `line_number`, and Kinesis' own. -#}
{% macro databricks_raw_lines(table) -%}
    {%- set carried = bronze_carries(table) -%}
    {%- if table.endswith('_stream') -%}
        {{ kinesis_raw_lines(carried) }}
    {%- elif var('databricks_bronze_batch') == 'kafka' -%}
        {{ kafka_raw_lines(carried) }}
    {%- else -%}
        {{ object_raw_lines(carried) }}
    {%- endif -%}
{%- endmacro %}

{#- Auto Loader over the sink's JSON-lines objects, <raw objects>/topics/<topic>/partition=<p>/
    <topic>+<p>+<first offset>.json: one line per offset (an empty one for an offset without a
    record, a Kafka commit marker), so a record's offset is the object's first plus its line. -#}
{% macro object_raw_lines(carried) -%}
    {%- set topic = var('kafka_topics', {'pin': 'pin', 'geo': 'geo', 'user': 'user'})[carried] -%}
    select
        concat('kafka/{{ topic }}/', objects.partition_number) as _stream,
        objects.first_offset + lines.position as _offset,
        objects.path as _source,
        concat('kafka/{{ topic }}/', objects.partition_number, '@', cast(objects.first_offset as string)) as _batch_id,
        cast(lines.position + 1 as bigint) as line_number,
        lines.text as raw_data,
        lines.text as raw_record
    from (
        select
            value,
            _metadata.file_path as path,
            regexp_extract(_metadata.file_path, 'partition=([0-9]+)/', 1) as partition_number,
            cast(regexp_extract(_metadata.file_path, '[+]([0-9]+)[.]json$', 1) as bigint) as first_offset
        from stream read_files(
            '{{ raw_objects_location() }}/topics/{{ topic }}/',
            format => 'text',
            wholeText => true
        )
    ) as objects
    lateral view posexplode(split(objects.value, '\n')) lines as position, text
    where lines.text != ''
{%- endmacro %}

{% macro raw_objects_location() -%}
    {{ return(var('raw_objects', 's3://' ~ env_var('PINPIPE_S3_BUCKET', 'pinpipe') ~ '/raw')) }}
{%- endmacro %}

{#- Kafka's records as they are in the topic: each partition a stream, each offset a record. -#}
{% macro kafka_raw_lines(carried) -%}
    {%- set topic = var('kafka_topics', {'pin': 'pin', 'geo': 'geo', 'user': 'user'})[carried] -%}
    select
        concat('kafka/', records.topic, '/', cast(records.partition as string)) as _stream,
        records.offset as _offset,
        concat('kafka://', records.topic, '/', cast(records.partition as string)) as _source,
        concat('kafka/', records.topic, '/', cast(records.partition as string), '@', cast(records.offset as string)) as _batch_id,
        cast(null as bigint) as line_number,
        cast(records.value as string) as raw_data,
        cast(records.value as string) as raw_record
    from stream read_kafka(
        bootstrapServers => '{{ var("kafka_bootstrap_servers") }}',
        subscribe => '{{ topic }}',
        startingOffsets => 'earliest'
    ) as records
{%- endmacro %}

{#- Kinesis' records: each shard a stream. A record's Data as JSON, or base64 of JSON decoded (as
    the Python consumer reads it). read_kinesis does not give a record's ordinal in its shard, which
    the Python consumer keeps as `_offset`: here `_offset` is the sequence number's last 18 digits
    (unique within a shard in practice), and `_sequence_number` is exact. -#}
{% macro kinesis_raw_lines(carried) -%}
    {%- set stream = var('kinesis_streams', {'pin': 'streaming-pin', 'geo': 'streaming-geo', 'user': 'streaming-user'})[carried] -%}
    {%- set scope = var('aws_secret_scope', none) -%}
    select
        concat('kinesis/', records.stream, '/', records.shardId) as _stream,
        cast(right(records.sequenceNumber, 18) as bigint) as _offset,
        concat('kinesis://', records.stream, '/', records.shardId) as _source,
        concat('kinesis/', records.stream, '/', records.shardId, '@', records.sequenceNumber) as _batch_id,
        cast(null as bigint) as line_number,
        cast(records.data as string) as raw_data,
        case
            when left(ltrim(cast(records.data as string)), 1) in ('{', '[', '"') then cast(records.data as string)
            else cast(try_to_binary(trim(cast(records.data as string)), 'base64') as string)
        end as raw_record,
        records.shardId as _shard_id,
        records.sequenceNumber as _sequence_number,
        records.approximateArrivalTimestamp as _arrival_time
    from stream read_kinesis(
        streamName => '{{ stream }}',
        initialPosition => 'trim_horizon',
        region => '{{ env_var("PINPIPE_S3_REGION", "us-east-1") }}'
        {%- if scope %},
        awsAccessKey => secret('{{ scope }}', 'aws-access-key'),
        awsSecretKey => secret('{{ scope }}', 'aws-secret-key')
        {%- endif %}
    ) as records
{%- endmacro %}
