with posts as (
    select
        post_year,
        category
    from {{ ref('int_posts_enriched') }}
    where post_year between 2018 and 2022 and category is not null
)

select
    post_year,
    category,
    count(*) as category_count
from posts
group by post_year, category
