{#- Posts per (dimension, category) from the enriched posts, keeping each dimension value's top
    categories, ties included. Rows: <dimension>, category, category_count. -#}
{% macro most_popular_category_by(posts, dimension) -%}
    {%- set category_counts -%}
        (
            select
                {{ dimension }},
                category,
                count(*) as category_count
            from {{ posts }}
            where {{ dimension }} is not null and category is not null
            group by {{ dimension }}, category
        ) as category_counts
    {%- endset -%}
    {{ top_ranked(category_counts, 'category_count', partition_by=dimension) }}
{%- endmacro %}
