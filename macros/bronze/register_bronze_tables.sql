{#- Makes the loaders' bronze Delta tables (<lake>/bronze/<table>) visible as relations in the
    `bronze` schema, so sources, unit tests and analysts all see them by name. Runs at the start of
    every dbt invocation (on-run-start); the lake root comes from PINPIPE_LAKE. -#}
{% macro register_bronze_tables() -%}
    {{ return(adapter.dispatch('register_bronze_tables', 'pinpipe')()) }}
{%- endmacro %}

{#- A relative lake (plain dbt without PINPIPE_LAKE) is the project's `lake/`: spelled out in full,
    so the views keep pointing at it from any working directory. -#}
{% macro bronze_location(table) -%}
    {%- set lake = env_var('PINPIPE_LAKE', 'lake') -%}
    {%- if not (lake.startswith('/') or '://' in lake) -%}
        {%- set lake = invocation_args_dict.get('project_dir', '.') ~ '/' ~ lake -%}
    {%- endif -%}
    {{ return(lake ~ '/bronze/' ~ table) }}
{%- endmacro %}

{#- The tables of the `bronze` source (models/staging/pinterest/_pinterest__sources.yml), the list
    the Python loaders write too (ingestion/lake.py; a test holds the two equal). -#}
{% macro bronze_tables() -%}
    {%- set tables = [] -%}
    {%- for source in graph.get('sources', {}).values() if source.source_name == 'bronze' -%}
        {%- do tables.append(source.name) -%}
    {%- endfor -%}
    {{ return(tables | sort) }}
{%- endmacro %}

{% macro duckdb__register_bronze_tables() -%}
    {#- a local lake without bronze (plain dbt before any load): one error saying so, not one per model.
        Every dbt run starts here (the streaming refresh every few seconds): the glob names the tables'
        `_delta_log` folders, one per table, not their commits, which grow with every load. -#}
    {%- set lake = bronze_location('') -%}
    {%- if execute and '://' not in lake
        and run_query("select count(*) from glob('" ~ lake ~ "*/_delta_log')").rows[0][0] == 0 -%}
        {{ exceptions.raise_compiler_error(
            'no bronze tables under ' ~ lake ~ ': load posts first (`pinpipe run`, or `pinpipe emulate`),'
            ~ ' or point PINPIPE_LAKE at a lake that has them'
        ) }}
    {%- endif %}
    {#- a view reads its table when it is made: one already over the same location is kept (it reads
        the table's newest version at each query), which saves the streaming refresh a read of
        every table's log -#}
    {%- set made = {} -%}
    {%- if execute -%}
        {%- for view in run_query("select view_name, sql from duckdb_views() where schema_name = 'bronze'").rows -%}
            {%- do made.update({view[0]: view[1]}) -%}
        {%- endfor -%}
    {%- endif %}
    create schema if not exists bronze;
    {%- for table in bronze_tables() %}
    {%- set scan = "delta_scan('" ~ bronze_location(table) ~ "')" %}
    {%- if (scan ~ ';') not in made.get(table, '') %}
    create or replace view bronze.{{ adapter.quote(table) }} as select * from {{ scan }};
    {%- endif %}
    {%- endfor %}
{%- endmacro %}

{#- Spark: external Delta tables over the same paths the loaders write (metadata only: dropping
    one never touches the data). Re-created each run so a changed lake root is picked up. -#}
{% macro spark__register_bronze_tables() -%}
    {%- if execute -%}
        {%- do run_query('create database if not exists bronze') -%}
        {%- for table in bronze_tables() -%}
            {%- do run_query('drop table if exists bronze.' ~ adapter.quote(table)) -%}
            {%- do run_query('create table bronze.' ~ adapter.quote(table) ~ " using delta location '" ~ spark_path(bronze_location(table)) ~ "'") -%}
        {%- endfor -%}
    {%- endif -%}
    select 1
{%- endmacro %}

{#- Hadoop reads S3 through the s3a connector. -#}
{% macro spark_path(location) -%}
    {{ return('s3a://' ~ location[5:] if location.startswith('s3://') else location) }}
{%- endmacro %}

{#- Databricks (Unity Catalog): external Delta tables on the lake's S3 location, created once;
    the location must be covered by an external location the catalog may read. Tables Databricks
    writes itself (databricks_bronze.sql) are its streaming tables instead. -#}
{% macro databricks__register_bronze_tables() -%}
    {%- if execute -%}
        {%- do run_query('create schema if not exists bronze') -%}
        {%- for table in bronze_tables() if not databricks_writes_bronze(table) -%}
            {%- do run_query('create table if not exists bronze.' ~ adapter.quote(table) ~ " using delta location '" ~ bronze_location(table) ~ "'") -%}
        {%- endfor -%}
    {%- endif -%}
    select 1
{%- endmacro %}
