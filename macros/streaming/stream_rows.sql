{#- The rows of a bronze stream table a streaming model has not taken in yet. On Databricks the
    model is a streaming table and Structured Streaming tracks that itself (`stream(...)`).
    Elsewhere the model is incremental: a shard's rows are committed in offset order and dbt reads
    one Delta snapshot, so the rows past the highest offset already taken per `_stream` are
    exactly the new ones, whatever the number of writers. -#}
{% macro stream_rows(relation) -%}
    {{ return(adapter.dispatch('stream_rows', 'pinpipe')(relation)) }}
{%- endmacro %}

{% macro default__stream_rows(relation) -%}
    select new_rows.*
    from {{ relation }} as new_rows
    {%- if is_incremental() %}
    left join (
        select _stream, max(_offset) as loaded_through
        from {{ this }}
        group by _stream
    ) as loaded
        on new_rows._stream = loaded._stream
    where loaded.loaded_through is null or new_rows._offset > loaded.loaded_through
    {%- endif %}
{%- endmacro %}

{% macro databricks__stream_rows(relation) -%}
    select * from stream({{ relation }})
{%- endmacro %}

{#- The "now" the real-time metrics' windows end at: the current time, or the `metrics_as_of` var
    (a timestamp text) to recompute them as of another moment. -#}
{% macro metrics_as_of() -%}
    {%- if var('metrics_as_of', none) -%}
        cast({{ dbt.string_literal(var('metrics_as_of')) }} as {{ dbt.type_timestamp() }})
    {%- else -%}
        {{ dbt.current_timestamp() }}
    {%- endif -%}
{%- endmacro %}
