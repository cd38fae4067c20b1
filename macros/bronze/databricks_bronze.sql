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
    {{ bronze_rows(table, databricks_raw_lines(table)) }}
{%- endmacro %}

{#- Every record no bronze table could key, from each source Databricks reads. -#}
{% macro databricks_quarantine() -%}
    {%- set tables = [] -%}
    {%- for table in bronze_tables() if table != 'quarantine' and databricks_writes_bronze(table) -%}
        {%- do tables.append(table) -%}
    {%- endfor -%}
    {%- for table in tables %}
{{ quarantine_rows(table, databricks_raw_lines(table)) }}
    {%- if not loop.last %}
union all
    {%- endif %}
    {%- endfor %}
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

{#- Auto Loader over the sink's JSON-lines objects (object_lines). -#}
{% macro object_raw_lines(carried) -%}
    {%- set topic = var('kafka_topics', {'pin': 'pin', 'geo': 'geo', 'user': 'user'})[carried] -%}
    {%- set objects -%}
        select value, _metadata.file_path as file_path
        from stream read_files(
            '{{ raw_objects_location() }}/topics/{{ topic }}/',
            format => 'text',
            wholeText => true
        )
    {%- endset -%}
    {{ object_lines(objects, topic) }}
{%- endmacro %}

{% macro raw_objects_location() -%}
    {{ return(var('raw_objects', 's3://' ~ env_var('PINPIPE_S3_BUCKET', 'pinpipe') ~ '/raw')) }}
{%- endmacro %}

{#- Kafka's records as they are in the topic (kafka_lines). -#}
{% macro kafka_raw_lines(carried) -%}
    {%- set topic = var('kafka_topics', {'pin': 'pin', 'geo': 'geo', 'user': 'user'})[carried] -%}
    {%- set records -%}
        select * from stream read_kafka(
            bootstrapServers => '{{ var("kafka_bootstrap_servers") }}',
            subscribe => '{{ topic }}',
            startingOffsets => 'earliest'
        )
    {%- endset -%}
    {{ kafka_lines(records, topic) }}
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
