{#- Makes the loaders' bronze Delta tables (<lake>/bronze/<table>) visible as relations in the
    `bronze` schema, so sources, unit tests and analysts all see them by name. Runs at the start of
    every dbt invocation (on-run-start); the lake root comes from PINPIPE_LAKE. -#}
{% macro register_bronze_tables() -%}
    {{ return(adapter.dispatch('register_bronze_tables', 'pinpipe')()) }}
{%- endmacro %}

{% macro bronze_location(table) -%}
    {{ return(env_var('PINPIPE_LAKE', 'lake') ~ '/bronze/' ~ table) }}
{%- endmacro %}

{% macro bronze_tables() -%}
    {{ return(['pin', 'geo', 'user', 'quarantine']) }}
{%- endmacro %}

{% macro duckdb__register_bronze_tables() -%}
    create schema if not exists bronze;
    {%- for table in bronze_tables() %}
    create or replace view bronze.{{ adapter.quote(table) }} as
        select * from delta_scan('{{ bronze_location(table) }}');
    {%- endfor %}
{%- endmacro %}
