{#- The bronze rows an incremental staging model has still to read: all of bronze on a first build
    (or --full-refresh), else the rows ingested since the last build (`ingested_since_last_build`);
    re-read rows merge by key to the same winner, so the lookback costs time, never correctness. -#}
{% macro new_bronze_rows(relation) -%}
    select * from {{ relation }}
    {#- a unit test has no `this`: it feeds its fixture rows as a first build would read them -#}
    {%- if this is not none and is_incremental() %}
        {%- do assert_built_from(relation) %}
    where {{ ingested_since_last_build() }}
    {%- endif %}
{%- endmacro %}

{#- One row per post key (the integer value of `raw_key`) from a CTE of bronze rows: the latest
    ingested copy, then the later stream, then the later offset.
    The winners are ranked on a narrow projection (key and lineage) and the whole rows joined back by
    bronze's own key, (`_stream`, `_offset`), which the loaders write exactly once: ranking whole rows
    spilled them at 10M (staging pins 80 s against 44 s). Cleaning then runs on the winners only. -#}
{% macro latest_copy_per_post(rows, raw_key) -%}
    {%- set key = post_key(raw_key) -%}
    {%- set keyed -%}
        (select {{ key }} as _key, _ingested_at, _stream, _offset from {{ rows }}) as keyed
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

{#- A condition on `_ingested_at` for an incremental model's next build: the rows ingested since the
    newest row the model holds, less a lookback (PINPIPE_STAGING_LOOKBACK_MINUTES) so that a writer
    which committed late is never missed. -#}
{% macro ingested_since_last_build() -%}
    {#- (a unit test's `this` is its fixture's name, not a table) -#}
    {%- if execute and this is not string
        and '_ingested_at' not in adapter.get_columns_in_relation(this) | map(attribute='name') | list -%}
        {{ exceptions.raise_compiler_error(
            this.identifier ~ ' was built by an earlier version of this project, without `_ingested_at`:'
            ~ ' rebuild it from scratch with `pinpipe transform --full-refresh` (or `dbt build --full-refresh`)'
        ) }}
    {%- endif -%}
    _ingested_at >= coalesce(
        (
            select {{ dbt.dateadd('minute', -staging_lookback_minutes(), 'max(_ingested_at)') }}
            from {{ this }}
        ),
        cast('1970-01-01' as timestamp)
    )
{%- endmacro %}

{#- PINPIPE_STAGING_LOOKBACK_MINUTES as a number. `pinpipe` checks its settings before dbt runs; plain
    dbt reads the variable here, where `| int` alone would turn `abc` into 0 and `-5` into a window
    that skips the newest rows: anything but a whole number of minutes, 0 or more, stops the build. -#}
{% macro staging_lookback_minutes() -%}
    {%- set lookback = env_var('PINPIPE_STAGING_LOOKBACK_MINUTES', '60') | trim -%}
    {%- if not lookback.isdigit() -%}
        {{ exceptions.raise_compiler_error(
            'PINPIPE_STAGING_LOOKBACK_MINUTES must be a whole number of minutes, 0 or more (it is "'
            ~ lookback ~ '"): set it to, say, 60, or unset it'
        ) }}
    {%- endif -%}
    {{ return(lookback | int) }}
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
