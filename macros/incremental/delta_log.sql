{#- Reading a bronze table's Delta log from dbt: its newest version, the data files the commits
    after a version added, and those files' rows. Incremental staging's exact watermark
    (`new_bronze_rows`) is built on these. -#}

{#- The data files bronze's Delta log added after version `since`, as [{path, version}]: the adds
    of the commits after it that changed data, or, where a compaction (`pinpipe compact`) replaced
    some of those files, the files it wrote (they hold older rows again, which merge to the same
    winners; the replaced ones may be vacuumed). A commit that removed rows, or a log that no longer
    holds the commit after `since` (cleaned up), cannot be read from: the build says so and how to
    rebuild. -#}
{% macro bronze_files_added_since(relation, since) -%}
    {%- set commits = {} -%}
    {%- for action in bronze_log_actions(relation, since) -%}
        {%- do commits.setdefault(action[0] | int, []).append(action) -%}
    {%- endfor -%}
    {%- set versions = commits.keys() | sort -%}
    {%- set newest = bronze_newest_version(relation) -%}
    {%- set rebuild = rebuild_from_scratch() -%}
    {%- set read = this.identifier ~ ' has read bronze.' ~ relation.identifier ~ ' up to version ' ~ since -%}
    {%- if newest < since -%}
        {{ exceptions.raise_compiler_error(read ~ ', and the table is at version ' ~ newest ~ ' (it was made again)' ~ rebuild) }}
    {%- elif newest > since and (since + 1) not in versions -%}
        {{ exceptions.raise_compiler_error(
            read ~ ', and its Delta log no longer holds version ' ~ (since + 1) ~ ' (cleaned up after a checkpoint)' ~ rebuild
        ) }}
    {%- endif -%}
    {%- set added, removed = {}, [] -%}
    {%- for version in versions -%}
        {%- for action in commits[version] -%}
            {%- set kind, path, data_change = action[1], action[2], action[3] -%}
            {%- if kind == 'remove' and data_change -%}
                {{ exceptions.raise_compiler_error(read ~ ', and version ' ~ version ~ ' removed rows from it' ~ rebuild) }}
            {%- elif kind == 'remove' -%}
                {%- do removed.append(path) -%}
            {%- elif kind == 'add' -%}
                {%- do added.update({path: {'path': path, 'version': version, 'data_change': data_change}}) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endfor -%}
    {%- set compacted = removed | select('in', added) | list | length > 0 -%}
    {%- set files = [] -%}
    {%- for path, file in added.items() if path not in removed and (file.data_change or compacted) -%}
        {%- do files.append(file) -%}
    {%- endfor -%}
    {{ return(files) }}
{%- endmacro %}

{#- Every action of the commits after version `since` of a bronze table's Delta log, as rows of
    (version, kind, path, data_change): kind is 'add', 'remove' or none (a commit's other actions,
    which still show the commit is there). -#}
{% macro bronze_log_actions(relation, since) -%}
    {{ return(adapter.dispatch('bronze_log_actions', 'pinpipe')(relation, since)) }}
{%- endmacro %}

{#- DuckDB lists the log's commit files (one listing, also of an S3 lake) and reads only the new ones. -#}
{% macro duckdb__bronze_log_actions(relation, since) -%}
    {%- set log = bronze_location(relation.identifier) ~ '/_delta_log/' -%}
    {%- set files = [] -%}
    {%- for row in run_query("select file from glob('" ~ log ~ "*.json')").rows -%}
        {%- if row[0].split('/')[-1].split('.')[0] | int > since -%}
            {%- do files.append("'" ~ row[0] ~ "'") -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if not files -%}
        {{ return([]) }}
    {%- endif -%}
    {%- set actions -%}
        with actions as (
            select
                cast(regexp_extract(filename, '([0-9]+)[.]json$', 1) as bigint) as version,
                "add",
                "remove"
            from read_json(
                [{{ files | join(', ') }}],
                format = 'newline_delimited',
                columns = {
                    'add': 'struct(path varchar, "dataChange" boolean)',
                    'remove': 'struct(path varchar, "dataChange" boolean)'
                },
                filename = true
            )
        )
        {{ log_actions_by_kind('actions') }}
    {%- endset -%}
    {{ return(run_query(actions).rows) }}
{%- endmacro %}

{#- Spark reads the log's lines as text and parses the two actions it needs (a log without a
    `remove` yet has no such column to infer). -#}
{% macro spark__bronze_log_actions(relation, since) -%}
    {%- set actions -%}
        with lines as (
            select
                cast(regexp_extract(input_file_name(), '([0-9]+)[.]json$', 1) as bigint) as version,
                from_json(value, 'add struct<path: string, dataChange: boolean>, remove struct<path: string, dataChange: boolean>') as action
            from text.`{{ spark_path(bronze_location(relation.identifier)) }}/_delta_log/*.json`
        ),

        actions as (
            select version, action.add as `add`, action.remove as `remove` from lines where version > {{ since }}
        )
        {{ log_actions_by_kind('actions') }}
    {%- endset -%}
    {{ return(run_query(actions).rows) }}
{%- endmacro %}

{% macro log_actions_by_kind(actions) -%}
        select version, 'add' as kind, {{ adapter.quote('add') }}.path as path,
            coalesce({{ adapter.quote('add') }}.{{ adapter.quote('dataChange') }}, true) as data_change
        from {{ actions }} where {{ adapter.quote('add') }} is not null
        union all
        select version, 'remove' as kind, {{ adapter.quote('remove') }}.path as path,
            coalesce({{ adapter.quote('remove') }}.{{ adapter.quote('dataChange') }}, true) as data_change
        from {{ actions }} where {{ adapter.quote('remove') }} is not null
        union all
        select distinct version, null as kind, null as path, null as data_change from {{ actions }}
{%- endmacro %}

{#- A bronze table's newest Delta version: -1 where nothing is read (parsing, and `dbt compile`,
    which runs nothing and may come before any load: its SQL shows the label as -1). -#}
{% macro bronze_newest_version(relation) -%}
    {%- if not execute or flags.WHICH == 'compile' -%}
        {{ return(-1) }}
    {%- endif -%}
    {{ return(adapter.dispatch('bronze_newest_version', 'pinpipe')(relation)) }}
{%- endmacro %}

{#- the newest commit or checkpoint file (a cleaned-up log may keep a checkpoint past its commits) -#}
{% macro duckdb__bronze_newest_version(relation) -%}
    {%- set log = bronze_location(relation.identifier) ~ '/_delta_log/' -%}
    {%- set newest = run_query(
        "select max(cast(regexp_extract(file, '/([0-9]+)[.][^/]*$', 1) as bigint)) from glob('" ~ log ~ "0*')"
    ).rows[0][0] -%}
    {{ return(-1 if newest is none else newest | int) }}
{%- endmacro %}

{#- by path: `dbt compile` registers no bronze tables (no on-run-start) -#}
{% macro spark__bronze_newest_version(relation) -%}
    {%- set table = 'delta.`' ~ spark_path(bronze_location(relation.identifier)) ~ '`' -%}
    {{ return(run_query('describe history ' ~ table ~ ' limit 1').rows[0]['version'] | int) }}
{%- endmacro %}

{#- The Parquet files at `paths` (relative to the bronze table), with each row's file name as `_file_name`. -#}
{% macro bronze_parquet_files(relation, paths) -%}
    {{ return(adapter.dispatch('bronze_parquet_files', 'pinpipe')(relation, paths)) }}
{%- endmacro %}

{% macro duckdb__bronze_parquet_files(relation, paths) -%}
    {%- set location = bronze_location(relation.identifier) -%}
    (
        select *, parse_filename(filename) as _file_name
        from read_parquet(
            [{%- for path in paths %}'{{ location }}/{{ path }}'{{ ', ' if not loop.last }}{% endfor -%}],
            filename = true,
            union_by_name = true
        )
    )
{%- endmacro %}

{#- one path, the files as a Hadoop glob alternation: {a,b,c} -#}
{% macro spark__bronze_parquet_files(relation, paths) -%}
    (
        select *, element_at(split(input_file_name(), '/'), -1) as _file_name
        from parquet.`{{ spark_path(bronze_location(relation.identifier)) }}/{{ '{' ~ paths | join(',') ~ '}' }}`
    )
{%- endmacro %}
