{#- One row per key from a CTE: the most recently ingested, the latest offset breaking ties.
    Replayed posts repeat a key with identical content, so which copy wins does not change the
    values; the rule only makes the choice deterministic. Adds a `_row_number` column. -#}
{% macro latest_per_key(relation, key, ingested_at='_ingested_at') -%}
    select * from (
        select
            *,
            row_number() over (
                partition by {{ key }}
                order by {{ ingested_at }} desc, _stream desc, _offset desc
            ) as _row_number
        from {{ relation }}
    ) as ranked
    where _row_number = 1
{%- endmacro %}
