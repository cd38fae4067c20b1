{#- The bronze rows an incremental staging model has still to read, each with the Delta version
    that committed it (`_bronze_version`): all of bronze on a first build (or --full-refresh),
    labelled with the table's newest version; else the files bronze's Delta log added after the
    newest version staging holds (`bronze_files_added_since`). No clock is involved, so a row
    committed late is never missed; a row read twice merges to the same winner
    (`latest_copy_per_post` ranks it against the copy staging holds). -#}
{% macro new_bronze_rows(relation) -%}
    {#- a unit test feeds its fixture rows as a first build reads them -#}
    {%- if in_unit_test() %}
    select *, cast(0 as bigint) as _bronze_version from {{ relation }}
    {%- elif this is none or not is_incremental() or databricks_writes_bronze(relation.identifier) %}
    {#- (a streaming table Databricks writes has no log dbt can read by path: it is read whole each
        build, ranked against what staging holds as any re-read row is) #}
    select *, cast({{ bronze_newest_version(relation) }} as bigint) as _bronze_version from {{ relation }}
    {%- else %}
        {%- do assert_built_from(relation) %}
        {%- set since = last_version_read(this, '_bronze_version') %}
        {%- set added = bronze_files_added_since(relation, since) %}
        {%- set columns = adapter.get_columns_in_relation(relation) | map(attribute='name') | list %}
    select
        {%- for column in columns %}
        bronze.{{ adapter.quote(column) }},
        {%- endfor %}
        added.version as _bronze_version
    {%- if added | length == 0 %}
    from {{ relation }} as bronze
    cross join (select cast(null as bigint) as version) as added
    where 1 = 0
    {%- else %}
    from {{ bronze_parquet_files(relation, added | map(attribute='path') | list) }} as bronze
    inner join (
        values
        {%- for file in added %}
        ({{ dbt.string_literal(file.path.split('/')[-1]) }}, cast({{ file.version }} as bigint)){{ ',' if not loop.last }}
        {%- endfor %}
    ) as added (file_name, version)
        on bronze._file_name = added.file_name
    {%- endif %}
    {%- endif %}
{%- endmacro %}

{#- One row per post key (the integer value of `raw_key`) from a CTE of bronze rows: the latest
    ingested copy, then the later stream, then the later offset. An incremental build ranks the new
    rows against the copy the model holds for the same keys and keeps only new winners, so what it
    merges is what a build from all of bronze would keep, however often a row is read.
    The winners are ranked on a narrow projection (key and lineage) and the whole rows joined back by
    bronze's own key, (`_stream`, `_offset`), which the loaders write exactly once: ranking whole rows
    spilled them at 10M (staging pins 80 s against 44 s). Cleaning then runs on the winners only. -#}
{% macro latest_copy_per_post(rows, raw_key) -%}
    {%- set key = post_key(raw_key) -%}
    {%- set keyed -%}
        (
            select {{ key }} as _key, _ingested_at, _stream, _offset from {{ rows }}
            {%- if this is not none and is_incremental() and not in_unit_test() %}
            union all
            select ind, _ingested_at, _stream, _offset from {{ this }}
            where ind in (select {{ key }} from {{ rows }})
            {%- endif %}
        ) as keyed
    {%- endset %}
    select {{ rows }}.*
    from {{ rows }}
    inner join ({{ latest_per_key(keyed, '_key') }}) as latest
        {#- null-safe: unit-test fixtures leave lineage out, and a key that does not cast (which the
            loaders never let into bronze) keeps one row, for the `not_null` test to fail on, as the
            window over whole rows did #}
        on
            {{ key }} is not distinct from latest._key
            and {{ rows }}._stream is not distinct from latest._stream
            and {{ rows }}._offset is not distinct from latest._offset
{%- endmacro %}

{#- The newest value of `column` (a Delta version) in an incremental model: the watermark its next
    build reads after. A table built before the column existed is rebuilt from scratch, not merged
    into (`pinpipe transform` does it at once; dbt says how). -#}
{% macro last_version_read(model, column) -%}
    {%- if not execute -%}
        {{ return(-1) }}
    {%- endif -%}
    {%- if column not in adapter.get_columns_in_relation(model) | map(attribute='name') | list -%}
        {{ exceptions.raise_compiler_error(
            model.identifier ~ ' was built by an earlier version of this project, without `' ~ column ~ '`'
            ~ rebuild_from_scratch()
        ) }}
    {%- endif -%}
    {%- set newest = run_query('select max(' ~ column ~ ') from ' ~ model).rows[0][0] -%}
    {{ return(-1 if newest is none else newest | int) }}
{%- endmacro %}

{#- Staging merges new rows into what it holds, so it must hold rows of this very bronze: after the
    lake was switched or rebuilt, its newest row (stream, offset and the instant it was ingested,
    which no other lake shares) is missing there, and merging would keep posts the lake does not
    have. Then the build stops and says how to rebuild from scratch. -#}
{% macro assert_built_from(relation) -%}
    {%- if execute -%}
        {%- set ingested = 'cast(_ingested_at as ' ~ dbt.type_string() ~ ')' -%}
        {#- the newest instant first, then the row: a sort of the whole table costs seconds at 10M rows -#}
        {%- set newest = run_query(
            'select _stream, _offset, ' ~ ingested ~ ' from ' ~ this
            ~ ' where _ingested_at = (select max(_ingested_at) from ' ~ this ~ ')'
            ~ ' order by _stream desc, _offset desc limit 1'
        ) -%}
        {%- if newest.rows | length > 0 -%}
            {%- set stream, offset, ingested_at = newest.rows[0][0], newest.rows[0][1], newest.rows[0][2] -%}
            {%- set found = run_query(
                'select count(*) from ' ~ relation ~ ' where _stream = ' ~ dbt.string_literal(stream)
                ~ ' and _offset = ' ~ offset ~ ' and ' ~ ingested ~ ' = ' ~ dbt.string_literal(ingested_at)
            ) -%}
            {%- if found.rows[0][0] == 0 -%}
                {{ exceptions.raise_compiler_error(
                    this.identifier ~ ' was built from another bronze (its newest row, ' ~ stream ~ ' offset ' ~ offset
                    ~ ', is not in ' ~ relation ~ '): rebuild it from scratch with `pinpipe transform --full-refresh`'
                    ~ ' (or `dbt build --full-refresh`)'
                ) }}
            {%- endif -%}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{#- The newest bronze version of `column` an incremental model holds, for a condition on what it
    has still to read (a unit test's fixture of `this` is read as a query). -#}
{% macro version_held(column) -%}
    {%- if in_unit_test() -%}
        (select coalesce(max({{ column }}), -1) from {{ this }})
    {%- else -%}
        {{ last_version_read(this, column) }}
    {%- endif -%}
{%- endmacro %}

{#- int_people has read int_post_person_history up to build `built`: a history made again since
    (fewer builds than that) no longer says which people changed. -#}
{% macro assert_history_holds(built) -%}
    {%- if execute and not in_unit_test() -%}
        {%- set history = ref('int_post_person_history') -%}
        {%- set newest = run_query('select max(_build) from ' ~ history).rows[0][0] -%}
        {%- if newest is none or newest < built | int -%}
            {{ exceptions.raise_compiler_error(
                this.identifier ~ ' has read ' ~ history.identifier ~ ' up to build ' ~ built ~ ', and it was made again'
                ~ rebuild_from_scratch()
            ) }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{#- A unit test renders the model with fixtures for its inputs (and for `this`, when it gives one):
    nothing of the lake or the warehouse is there to read. -#}
{% macro in_unit_test() -%}
    {{ return(model.resource_type == 'unit_test') }}
{%- endmacro %}

{#- How a message that stops an incremental model ends: `pinpipe` recognises it and rebuilds
    (`transform.rebuild_from_scratch_reason`). -#}
{% macro rebuild_from_scratch() -%}
    {{ return(': rebuild it from scratch with `pinpipe transform --full-refresh` (or `dbt build --full-refresh`)') }}
{%- endmacro %}
