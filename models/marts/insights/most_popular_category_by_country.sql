with category_counts as (
    select
        country,
        category,
        count(*) as category_count
    from {{ ref('int_posts_enriched') }}
    where country is not null and category is not null
    group by country, category
),

most_popular as (
    {{ top_ranked('category_counts', 'category_count', partition_by='country') }}
)

select
    country,
    category,
    category_count
from most_popular
