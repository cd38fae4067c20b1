{#- An incremental model numbers its builds in `_build`: 0 for a first build (or --full-refresh),
    then one more than the newest it holds. The rows of its newest `_build` are those its latest
    build wrote, which is what its data tests check by default (below). -#}
{% macro next_build() -%}
    {#- (a unit test gives `this` only where it feeds the model's table as a fixture) -#}
    {%- if this is not none and is_incremental() -%}
        {{ version_held('_build') }} + 1
    {%- else -%}
        0
    {%- endif -%}
{%- endmacro %}

{#- dbt's generic tests read their model through `get_where_subquery`; this is dbt's own, with
    `__newest_build__` in a test's `where` replaced at run time, as dbt's docs on `where` describe.
    `__newest_build__` stands for the rows the model's latest build wrote: its newest `_build` for an
    incremental model, every row of a table. For a model merged by its key, a key test on those rows
    proves what it would on every row: the merge replaced whatever the table held for the same keys,
    and the rows before were tested when they were written. PINPIPE_TEST_EVERY_ROW=true tests every
    row (the DAG's Sunday run does), as does a --full-refresh, which writes every row in one build. -#}
{% macro default__get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- if where and '__newest_build__' in where -%}
        {%- set where = where | replace('__newest_build__', newest_build_condition(relation)) -%}
    {%- endif -%}
    {%- if where -%}
        {{ return('(select * from ' ~ relation ~ ' where ' ~ where ~ ') dbt_subquery') }}
    {%- else -%}
        {{ return(relation) }}
    {%- endif -%}
{%- endmacro %}

{% macro newest_build_condition(relation) -%}
    {%- set tested = graph.nodes.get(model.attached_node) if execute and model.attached_node else none -%}
    {%- if tested is none
        or tested.config.materialized != 'incremental'
        or env_var('PINPIPE_TEST_EVERY_ROW', 'false') | lower == 'true' -%}
        {{ return('1 = 1') }}
    {%- endif -%}
    {{ return('_build = (select max(_build) from ' ~ relation ~ ')') }}
{%- endmacro %}
