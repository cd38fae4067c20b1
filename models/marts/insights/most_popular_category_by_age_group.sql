with category_counts as (
    select
        age_group,
        category,
        count(*) as category_count
    from {{ ref('int_posts_enriched') }}
    where age_group is not null and category is not null
    group by age_group, category
),

most_popular as (
    {{ top_ranked('category_counts', 'category_count', partition_by='age_group') }}
)

select
    age_group,
    category,
    category_count
from most_popular
