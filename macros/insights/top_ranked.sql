{#- Rows of `relation` whose `measure` is the highest within their group, ties kept (rank, not
    row_number). With no `partition_by`, the highest over the whole relation. Adds `_rank`. -#}
{% macro top_ranked(relation, measure, partition_by=none) -%}
    select * from (
        select
            *,
            rank() over (
                {% if partition_by %}partition by {{ partition_by }}{% endif %}
                order by {{ measure }} desc
            ) as _rank
        from {{ relation }}
    ) as ranked
    where _rank = 1
{%- endmacro %}
